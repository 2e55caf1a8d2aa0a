"""Connectivity from ROI time series through nilearn's ``ConnectivityMeasure``, the group-fitted stage
(tangent space reference, ComBat harmonisation) fitted on training subjects only, and Fisher z.

nilearn's default (``kind="covariance"`` with Ledoit-Wolf shrinkage) is not what papers call correlation: biokd
always states the kind and the estimator; ``estimator="empirical"`` with ``kind="correlation"`` is Pearson's r.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._io import atomic_path, write_json
from ..data.stages import GroupStage
from ..errors import ConfigError, DataError

KINDS = ("correlation", "partial correlation", "tangent")
FISHER_CLIP = 1.0 - 1e-7


def covariance_estimator(name: str):
    """The scikit-learn covariance estimator named by the protocol."""
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf

    if name == "empirical":
        return EmpiricalCovariance()
    if name == "ledoit_wolf":
        return LedoitWolf(store_precision=False)
    raise ConfigError(f"estimator={name!r} is not 'empirical' or 'ledoit_wolf'")


def connectivity_measure(kind: str, estimator: str = "empirical"):
    """``nilearn.connectome.ConnectivityMeasure`` with the kind and estimator stated (never nilearn's defaults)."""
    from nilearn.connectome import ConnectivityMeasure

    if kind not in KINDS:
        raise ConfigError(f"connectivity kind {kind!r} is not one of {', '.join(KINDS)}")
    return ConnectivityMeasure(kind=kind, cov_estimator=covariance_estimator(estimator), standardize=True)


def fisher_z(matrix: np.ndarray) -> np.ndarray:
    """arctanh of the off-diagonal values (clipped inside ±1), diagonal set to 0; works on (..., R, R)."""
    z = np.arctanh(np.clip(matrix, -FISHER_CLIP, FISHER_CLIP))
    idx = np.arange(matrix.shape[-1])
    z[..., idx, idx] = 0.0
    return z


def subject_connectivity(
    timeseries: np.ndarray, kind: str = "correlation", estimator: str = "empirical", fisher: bool = False
) -> np.ndarray:
    """One subject's (R, R) connectivity for a kind that needs no group fit (correlation, partial correlation)."""
    if kind == "tangent":
        raise ConfigError("tangent connectivity is fitted on a group: use fit_group_stage / apply_group_stage")
    fc = connectivity_measure(kind, estimator).fit_transform([np.asarray(timeseries, np.float64)])[0]
    return fisher_z(fc) if fisher else fc


# ------------------------------------------------------------------------------------------ group stage


@dataclass
class GroupState:
    """A group stage fitted on training subjects: tangent reference and/or ComBat parameters."""

    kind: str
    estimator: str
    fisher_z: bool
    n_rois: int
    n_train: int
    tangent_mean: np.ndarray | None = None  # geometric mean of training covariances (nilearn ``mean_``)
    tangent_whitening: np.ndarray | None = None  # mean^(-1/2) (nilearn ``whitening_``)
    combat: dict[str, Any] | None = None  # neuroHarmonize model
    train_sites: list[str] = field(default_factory=list)

    def save(self, folder: str | Path) -> Path:
        """``group_state.npz`` (arrays) + ``group_state.json`` (everything else); no pickle."""
        folder = Path(folder)
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "kind": self.kind,
            "estimator": self.estimator,
            "fisher_z": self.fisher_z,
            "n_rois": self.n_rois,
            "n_train": self.n_train,
            "train_sites": self.train_sites,
            "combat": None,
        }
        if self.tangent_mean is not None:
            arrays["tangent_mean"] = self.tangent_mean
            arrays["tangent_whitening"] = self.tangent_whitening
        if self.combat is not None:
            meta["combat"] = _combat_to_plain(self.combat, arrays)
        with atomic_path(folder / "group_state.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        write_json(folder / "group_state.json", meta)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> GroupState:
        folder = Path(folder)
        meta_path, npz_path = folder / "group_state.json", folder / "group_state.npz"
        for path in (meta_path, npz_path):
            if not path.is_file():
                raise DataError(path, "group stage file missing (written by fit_group_stage(...).save)")
        meta = json.loads(meta_path.read_text())
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return _state(meta, arrays, meta_path)


def _combat_to_plain(model: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if model.get("smooth_model", {}).get("perform_smoothing"):
        raise ConfigError("ComBat-GAM smoothing models are not supported (saved without pickle)")
    plain: dict[str, Any] = {"arrays": [], "values": {}}
    for key, value in model.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[f"combat__{key}"] = value
            plain["arrays"].append(key)
        elif key == "smooth_model":
            plain["values"][key] = {k: v for k, v in value.items() if k != "bsplines_constructor"}
        else:
            plain["values"][key] = _to_json(value)
    return plain


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.asarray(value["__array__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _combat_from_plain(plain: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    model = {k: _from_json(v) for k, v in plain["values"].items()}
    for key in plain["arrays"]:
        model[key] = arrays[f"combat__{key}"]
    if "smooth_model" in model:
        model["smooth_model"]["bsplines_constructor"] = None
    return model


def _upper(fc: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(fc.shape[-1], k=1)
    return fc[:, iu[0], iu[1]]


def _from_upper(vec: np.ndarray, n: int, diagonal: np.ndarray) -> np.ndarray:
    out = np.repeat(diagonal[None], len(vec), axis=0).astype(np.float64)
    iu = np.triu_indices(n, k=1)
    out[:, iu[0], iu[1]] = vec
    out[:, iu[1], iu[0]] = vec
    return out


def _tangent_measure(state: GroupState):
    from sklearn.base import clone

    measure = connectivity_measure("tangent", state.estimator)
    # Restore the fitted reference (nilearn has no save/load for ConnectivityMeasure).
    measure.cov_estimator_ = clone(measure.cov_estimator)
    measure.n_features_in_ = state.n_rois
    measure.mean_ = state.tangent_mean
    measure.whitening_ = state.tangent_whitening
    return measure


def _connectivity_of(state: GroupState, timeseries: Sequence[np.ndarray]) -> np.ndarray:
    series = [np.asarray(ts, np.float64) for ts in timeseries]
    if state.kind == "tangent":
        # nilearn refuses to transform one subject; each subject's result depends on the reference only.
        padded = series if len(series) > 1 else series * 2
        fc = _tangent_measure(state).transform(padded)[: len(series)]
    else:
        fc = connectivity_measure(state.kind, state.estimator).fit_transform(series)
    return fisher_z(fc) if state.fisher_z and state.kind != "tangent" else fc


def fit_group_stage(
    train_timeseries: Sequence[np.ndarray],
    kind: str = "tangent",
    estimator: str = "empirical",
    *,
    fisher: bool = False,
    combat: bool = False,
    train_sites: Sequence[str] | None = None,
    covariates: dict[str, Sequence[float]] | None = None,
) -> GroupState:
    """Fit the group stage on TRAINING subjects only: the tangent reference (geometric mean of their covariances)
    and, with ``combat=True``, ComBat (neuroHarmonize) on their vectorised connectivity, by site.

    Fisher z is not applied to tangent values (they are not correlations).
    """
    if len(train_timeseries) < 2:
        raise ConfigError(f"the group stage needs at least 2 training subjects; got {len(train_timeseries)}")
    series = [np.asarray(ts, np.float64) for ts in train_timeseries]
    n_rois = series[0].shape[1]
    state = GroupState(kind=kind, estimator=estimator, fisher_z=fisher, n_rois=n_rois, n_train=len(series))
    if kind == "tangent":
        measure = connectivity_measure("tangent", estimator).fit(series)
        state.tangent_mean = np.asarray(measure.mean_)
        state.tangent_whitening = np.asarray(measure.whitening_)
    if combat:
        if train_sites is None or len(train_sites) != len(series):
            raise ConfigError("ComBat needs one site per training subject (train_sites)")
        state.combat = _fit_combat(_connectivity_of(state, series), list(train_sites), covariates)
        state.train_sites = sorted(set(map(str, train_sites)))
    return state


def apply_group_stage(
    state: GroupState,
    timeseries: Sequence[np.ndarray],
    sites: Sequence[str] | None = None,
    covariates: dict[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """(n, R, R) connectivity of any subjects (train, val or test) under the fitted state; the state is not changed."""
    fc = _connectivity_of(state, timeseries)
    if state.combat is not None:
        if sites is None or len(sites) != len(fc):
            raise ConfigError("this group stage holds ComBat: pass one site per subject")
        fc = _apply_combat(state, fc, [str(s) for s in sites], covariates)
    return fc


def _covars_frame(sites: list[str], covariates: dict[str, Sequence[float]] | None):
    import pandas as pd

    frame = pd.DataFrame({"SITE": sites})
    for name, values in (covariates or {}).items():
        frame[name] = np.asarray(values, np.float64)
    return frame


def _neuroharmonize():
    try:
        import neuroHarmonize
    except ImportError as err:
        raise ConfigError(
            "harmonize='combat' needs neuroHarmonize: pip install --no-deps neuroHarmonize neuroCombat statsmodels "
            "(its metadata pins numpy<2, pandas<3; it runs with numpy 2 and pandas 3)"
        ) from err
    return neuroHarmonize


def _fit_combat(fc: np.ndarray, sites: list[str], covariates) -> dict[str, Any]:
    if len(set(sites)) < 2:
        raise ConfigError("ComBat needs training subjects from at least 2 sites")
    with warnings.catch_warnings():  # neuroHarmonize's own use of np.matrix
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        model, _ = _neuroharmonize().harmonizationLearn(_upper(fc), _covars_frame(sites, covariates))
    return model


def _apply_combat(state: GroupState, fc: np.ndarray, sites: list[str], covariates) -> np.ndarray:
    harmonization_apply = _neuroharmonize().harmonizationApply
    unseen = sorted(set(sites) - set(state.train_sites))
    if unseen:
        raise ConfigError(
            f"ComBat cannot harmonise site(s) {unseen}: they had no training subjects (e.g. leave-site-out); "
            "use harmonize='none' there"
        )
    # neuroHarmonize fails when the batch lacks a training site; each row is adjusted independently, so one
    # placeholder row per absent training site is added and dropped again.
    absent = [s for s in state.train_sites if s not in set(sites)]
    vec = _upper(fc)
    pad = np.zeros((len(absent), vec.shape[1]))
    all_sites = sites + absent
    cov = None
    if covariates:
        cov = {k: list(np.asarray(v, np.float64)) + [float(np.mean(v))] * len(absent) for k, v in covariates.items()}
    out = harmonization_apply(np.vstack([vec, pad]), _covars_frame(all_sites, cov), state.combat)[: len(vec)]
    return _from_upper(out, fc.shape[-1], fc[0].diagonal() * np.eye(fc.shape[-1]))


# ------------------------------------------------------------------------------------ store group stages


class ConnectivityStage(GroupStage):
    """Group-fitted connectivity for the store's reader: consumes each item's ``timeseries`` (T, R), writes
    ``fc`` (R, R) and drops the time series (their length varies by site). Fitted on the training split only.

    Params: ``kind`` (tangent, correlation, partial correlation), ``estimator`` (empirical, ledoit_wolf),
    ``fisher_z`` (not for tangent), ``combat`` (neuroHarmonize by the items' ``site``).
    """

    kind = "connectivity"
    defaults: ClassVar[dict[str, Any]] = {
        "kind": "tangent",
        "estimator": "empirical",
        "fisher_z": False,
        "combat": False,
    }

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(f"stage {self.kind}: unknown params {unknown}; known: {sorted(self.defaults)}")
        super().__init__(**{**self.defaults, **params})
        self._memo: dict[int, torch.Tensor] = {}  # deterministic: each item's fc is computed once per process

    def fit(self, items: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        series, sites = [], []
        for item in items:
            if "timeseries" not in item:
                raise ConfigError(
                    f"stage {self.kind} needs per-subject time series in the store: preprocess with "
                    "--set connectivity=tangent or --set harmonize=combat (or --set keep_timeseries=true)"
                )
            series.append(np.asarray(item["timeseries"], np.float64))
            sites.append(str(item.get("site", "")))
        p = self.params
        state = fit_group_stage(
            series, p["kind"], p["estimator"], fisher=bool(p["fisher_z"]), combat=bool(p["combat"]), train_sites=sites
        )
        return _state_arrays(state)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        index = int(item.get("index", -1))
        if index >= 0 and index in self._memo:
            item.pop("timeseries", None)
            item["fc"] = self._memo[index]
            return item
        if "timeseries" not in item:
            raise ConfigError(f"stage {self.kind}: the item has no 'timeseries' (see the stage's fit)")
        if getattr(self, "_parsed", (None, None))[0] is not self.state:
            self._parsed = (self.state, _state_from_arrays(self.state))
        state = self._parsed[1]
        ts = np.asarray(item.pop("timeseries"), np.float64)
        sites = [str(item.get("site", ""))] if state.combat is not None else None
        fc = torch.as_tensor(apply_group_stage(state, [ts], sites)[0], dtype=torch.float32)
        if index >= 0:
            self._memo[index] = fc
        item["fc"] = fc
        return item


class TangentStage(ConnectivityStage):
    """Tangent-space connectivity around the training subjects' geometric mean (``STAGES["tangent"]``)."""

    kind = "tangent"


class CombatStage(ConnectivityStage):
    """Connectivity harmonised across sites by ComBat fitted on the training subjects (``STAGES["combat"]``)."""

    kind = "combat"
    defaults: ClassVar[dict[str, Any]] = {**ConnectivityStage.defaults, "kind": "correlation", "combat": True}


def _state_arrays(state: GroupState) -> dict[str, np.ndarray]:
    """A GroupState as plain arrays for the store's ``.npz`` (the JSON part as a byte array; no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "kind": state.kind,
        "estimator": state.estimator,
        "fisher_z": state.fisher_z,
        "n_rois": state.n_rois,
        "n_train": state.n_train,
        "train_sites": state.train_sites,
        "combat": _combat_to_plain(state.combat, arrays) if state.combat is not None else None,
    }
    if state.tangent_mean is not None:
        arrays["tangent_mean"], arrays["tangent_whitening"] = state.tangent_mean, state.tangent_whitening
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return arrays


def _state_from_arrays(arrays: dict[str, np.ndarray]) -> GroupState:
    meta = json.loads(bytes(np.asarray(arrays["meta_json"], np.uint8)).decode())
    return _state(meta, arrays, "stage state")


def _state(meta: dict[str, Any], arrays: dict[str, np.ndarray], where: Any) -> GroupState:
    """A fitted group stage from its saved description and arrays (a damaged file is a DataError)."""
    try:
        combat = _combat_from_plain(meta["combat"], arrays) if meta.get("combat") else None
        return GroupState(
            kind=meta["kind"],
            estimator=meta["estimator"],
            fisher_z=bool(meta["fisher_z"]),
            n_rois=int(meta["n_rois"]),
            n_train=int(meta["n_train"]),
            tangent_mean=arrays.get("tangent_mean"),
            tangent_whitening=arrays.get("tangent_whitening"),
            combat=combat,
            train_sites=list(meta.get("train_sites", [])),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(where, f"not a valid group-stage state ({err!r})") from None
