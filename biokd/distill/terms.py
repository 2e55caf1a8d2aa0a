"""Distillation loss terms as registered config classes: adding a term is one class here.

A term is a named, weighted dataclass read from the config's ``distill.terms`` list by its ``kind``. It
validates its own fields when the config is read (:meth:`Term.check`), says whether it reads the teacher
(``reads_teacher``: the one definition the Distiller, the cache and the pipeline use), builds what it needs
once feature shapes are known (:meth:`FeatureTerm.setup`: projections, routers) and computes its value on
a training step (:meth:`Term.value`). The tensor arithmetic lives in :mod:`biokd.distill.losses`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import ConfigError
from . import losses

if TYPE_CHECKING:
    from ..data.spec import DataSpec
    from ..tasks import Task
    from .distiller import Distiller


@dataclass
class Step:
    """What a term sees on one training step."""

    output: torch.Tensor
    features: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    batch: dict[str, Any]
    task: Task
    distiller: Distiller
    #: fraction of training done when this step's epoch began (epoch / epochs), for scheduled terms
    progress: float = 0.0


@dataclass
class Term:
    name: str
    kind: str = ""
    weight: float = 1.0

    reads_teacher: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.kind = type(self).kind_name  # what config.yaml records (aliases are written as their class's kind)
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("every distill term needs a `name`")
        if self.weight < 0 or self.weight != self.weight:
            raise ConfigError(f"term {self.name!r}: weight must be a non-negative number; got {self.weight}")

    @classmethod
    def from_config(cls, value: Any, where: str) -> Term:
        """Build the registered class of ``value['kind']`` from a config mapping, every field checked."""
        from ..config import from_dict

        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping with `name` and `kind`; got {value!r}")
        kind = value.get("kind")
        name = value.get("name", "?")
        if kind not in TERMS:
            import difflib

            close = difflib.get_close_matches(str(kind), list(TERMS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} ({name}): unknown term kind {kind!r}.{hint} Known: {', '.join(TERMS)}")
        return from_dict(TERMS[kind], {**value, "kind": TERMS[kind].kind_name}, where)

    kind_name: ClassVar[str] = ""

    def teacher_layers(self) -> list[str]:
        return []

    def student_module(self) -> str | None:
        return None

    def check(self, spec: DataSpec, task: Task) -> None:
        """Config-time validation against the data and task (raise :class:`ConfigError`)."""

    def value(self, step: Step) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class TaskLoss(Term):
    """The task's own loss on the labels (cross-entropy, binary cross-entropy or masked MSE)."""

    kind_name: ClassVar[str] = "task"
    reads_teacher: ClassVar[bool] = False
    label_smoothing: float = 0.0

    def value(self, step: Step) -> torch.Tensor:
        return step.task.loss(step.output, step.batch, self.label_smoothing)


@dataclass
class KD(Term):
    """Hinton KD on logits at ``temperature`` (two-class Bernoulli form for a one-logit binary output).

    With ``temperature_end`` the temperature moves linearly from ``temperature`` to ``temperature_end`` while
    training progresses from ``anneal[0]`` to ``anneal[1]`` (fractions of the epochs) and stays constant outside.
    """

    kind_name: ClassVar[str] = "kd"
    temperature: float = 4.0
    temperature_end: float | None = None
    anneal: list[float] = field(default_factory=lambda: [0.0, 1.0])

    def check(self, spec, task):
        if task.kind == "forecasting":
            raise ConfigError(f"term {self.name!r} (kd) needs class outputs; use `output_match` for forecasts")
        if self.temperature <= 0 or (self.temperature_end is not None and self.temperature_end <= 0):
            raise ConfigError(
                f"term {self.name!r}: temperatures must be positive; got {self.temperature}, {self.temperature_end}"
            )
        if len(self.anneal) != 2 or not 0 <= self.anneal[0] < self.anneal[1] <= 1:
            raise ConfigError(
                f"term {self.name!r}: anneal must be [start, end] with 0 <= start < end <= 1 "
                f"(fractions of training); got {self.anneal}"
            )

    def temperature_at(self, progress: float) -> float:
        """The temperature when ``progress`` (epoch / epochs) of training is done."""
        if self.temperature_end is None:
            return self.temperature
        start, end = self.anneal
        done = min(max((progress - start) / (end - start), 0.0), 1.0)
        return self.temperature + done * (self.temperature_end - self.temperature)

    def value(self, step):
        teacher = step.teacher["output"].to(step.output.dtype)
        temperature = self.temperature_at(step.progress)
        if step.output.shape[-1] == 1:
            return losses.binary_kd(step.output, teacher, temperature)
        return losses.kd_kl(step.output, teacher, temperature)


@dataclass
class OutputMatch(Term):
    """Regression KD: MSE between the student's outputs and the teacher's divided by ``temperature``."""

    kind_name: ClassVar[str] = "output_match"
    temperature: float = 1.0

    def value(self, step):
        return losses.output_match(step.output, step.teacher["output"].to(step.output.dtype), self.temperature)


@dataclass
class FeatureTerm(Term):
    """Base of terms on intermediate features read through taps (teacher layers and a student module).

    Several teacher layers are mixed per input by a router trained by a task probe. Features whose widths
    differ are mapped by a learned projection: the student to the teacher (``projection: student``), the
    teacher to the student (``teacher``) or both into a shared space of ``shared_dim`` (``shared``).
    """

    teacher: list[str] = field(default_factory=list)
    student: str = ""
    #: Axes averaged out of both features before comparison ("none", "all" but batch and last, or indices).
    pool: str | list[int] = "none"
    projection: Literal["student", "teacher", "shared", "none"] = "student"
    shared_dim: int | None = None
    router_hidden: int = 64
    #: Weight of the routed term's task probe; it alone trains the router.
    router_probe: float = 1.0
    #: Whether widths must agree through a projection (False for terms comparing structure, e.g. connectivity).
    needs_projection: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher or not self.student:
            raise ConfigError(f"term {self.name!r} ({self.kind}) needs `teacher` layer(s) and a `student` module")
        if self.projection == "shared" and not self.shared_dim:
            raise ConfigError(f"term {self.name!r}: projection 'shared' needs `shared_dim`")
        if isinstance(self.pool, str) and self.pool not in ("none", "all"):
            raise ConfigError(f"term {self.name!r}: pool must be 'none', 'all' or a list of axes; got {self.pool!r}")

    def teacher_layers(self):
        return list(self.teacher)

    def student_module(self):
        return self.student

    def setup(
        self, distiller: Distiller, teacher_view: torch.Tensor, student_view: torch.Tensor, batch: dict | None = None
    ) -> None:
        """Build the router (several layers) and projections once the feature shapes are known."""
        t_dim, s_dim = teacher_view.shape[-1], student_view.shape[-1]
        if len(self.teacher) > 1:
            distiller.routers[self.name] = _router(len(self.teacher), t_dim, self.router_hidden)
            distiller.probes[self.name] = nn.Linear(t_dim, distiller.n_outputs)
            teacher_view = teacher_view[:, 0]
        if not self.needs_projection or getattr(self, "signal", None):
            return
        if student_view.shape[1:-1] != teacher_view.shape[1:-1]:
            raise ConfigError(
                f"term {self.name!r}: student feature {self.student!r} pools to {tuple(student_view.shape)} but "
                f"the teacher's to {tuple(teacher_view.shape)}; all axes but the last must agree (set `pool`)"
            )
        if self.projection == "shared":
            distiller.projections[self.name] = nn.Linear(s_dim, self.shared_dim)  # type: ignore[arg-type]
            distiller.projections[f"{self.name}__teacher"] = nn.Linear(t_dim, self.shared_dim)  # type: ignore[arg-type]
        elif s_dim != t_dim:
            if self.projection == "none":
                raise ConfigError(f"term {self.name!r}: widths differ ({s_dim} vs {t_dim}) and projection is 'none'")
            if self.projection == "student":
                distiller.projections[self.name] = nn.Linear(s_dim, t_dim)
            else:
                distiller.projections[f"{self.name}__teacher"] = nn.Linear(t_dim, s_dim)

    def pair(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's and the teacher's features, routed and projected, ready to compare."""
        d = step.distiller
        student = pool_features(step.features[self.student], self.pool)
        teacher = step.teacher[f"view:{self.name}"].to(student.dtype)
        if self.name in d.routers:
            teacher, weights = d.routers[self.name](teacher)
            d.last_router_weights[self.name] = weights.detach()
            probe = d.probes[self.name](pool_features(teacher, "all"))
            d.probe_losses[self.name] = step.task.loss(probe, step.batch)
            teacher = teacher.detach()  # the alignment trains the student, not the router
        if self.name in d.projections:
            student = d.projections[self.name](student)
        if f"{self.name}__teacher" in d.projections:
            teacher = d.projections[f"{self.name}__teacher"](teacher)
        return student, teacher


def _router(n_layers: int, dim: int, hidden: int) -> nn.Module:
    from .router import LayerRouter

    return LayerRouter(n_layers, dim, hidden)


@dataclass
class Feature(FeatureTerm):
    """Feature alignment by MSE or 1 − cosine along the feature axis."""

    kind_name: ClassVar[str] = "feature"
    metric: Literal["mse", "cosine", "normalized_mse"] = "mse"

    def value(self, step):
        s, t = self.pair(step)
        if self.metric == "cosine":
            return losses.feature_cosine(s, t)
        if self.metric == "normalized_mse":
            return losses.normalized_mse(s, t)
        return losses.feature_mse(s, t)


class _SignalRate:
    """Shared by the spectral and connectivity terms: an optional signal-rate view of patch tokens.

    With ``signal`` (an input key, e.g. ``eeg`` ``(B, C, T)``), the tapped features must be patch tokens
    ``(B, C, S, D)`` of that input cut into ``S`` patches of ``P = T / S`` samples. Each side's tokens are
    decoded by a linear map ``D -> P`` to the samples of their own patch and laid end to end, giving activity
    ``(B, C, S·P)`` on the input's own time axis at the input's ``sfreq`` (taken from the data spec). The
    teacher's decoder is the least-squares reconstruction of the input patches from its tokens, fitted on the
    set-up batch and frozen: the teacher's view is what its layer retains, linearly, of the signal. The
    student's decoder starts from the same fit on its own tokens and trains with the term; both live in the
    Distiller (``projections``) and are dropped at export. Without ``signal`` the features are compared as
    tapped (then ``sfreq`` is the rate of whatever axis ``time_dim`` names, e.g. 1 Hz for 1-s patch tokens).
    """

    name: str
    signal: str | None
    sfreq: float | None
    teacher: list[str]
    student: str
    pool: str | list[int]

    def _check_signal(self, spec: DataSpec) -> int | None:
        """Take ``sfreq`` from the spec's ``signal`` input (a clash is an error); return its sample count."""
        if not self.signal:
            return None
        where = f"term {self.name!r}"
        try:
            inp = spec.input(self.signal)
        except ConfigError as err:
            raise ConfigError(f"{where}: signal {self.signal!r}: {err}") from None
        if inp.sfreq is None:
            raise ConfigError(f"{where}: input {self.signal!r} has no sampling rate in the data spec")
        if self.sfreq is not None and float(self.sfreq) != float(inp.sfreq):
            raise ConfigError(
                f"{where}: sfreq {self.sfreq:g} Hz differs from the {inp.sfreq:g} Hz of input {self.signal!r}; "
                "with `signal` the rate is the input's (drop `sfreq`)"
            )
        self.sfreq = float(inp.sfreq)
        return int(inp.shape[inp.axes.index("time")]) if "time" in inp.axes else None

    def _check_signal_fields(self) -> None:
        if self.signal and (len(self.teacher) != 1 or self.pool != "none"):
            raise ConfigError(
                f"term {self.name!r}: a signal-rate view (`signal: {self.signal}`) decodes one teacher layer's "
                f"unpooled patch tokens (B, C, S, D); got teacher {self.teacher} and pool {self.pool!r}"
            )

    def _fit_decoders(self, distiller: Distiller, teacher_view, student_view, batch) -> int:
        """Fit both patch decoders on the set-up batch; return the view's number of samples ``S·P``."""
        where = f"term {self.name!r}"
        if batch is None or self.signal not in batch:
            raise ConfigError(f"{where}: the set-up batch has no input {self.signal!r} to decode the tokens to")
        x = batch[self.signal].detach().float()
        for side, view in (("teacher", teacher_view), ("student", student_view)):
            if view.dim() != 4 or view.shape[:2] != x.shape[:2] or x.shape[-1] % view.shape[2]:
                raise ConfigError(
                    f"{where}: a signal-rate view needs {side} patch tokens (B, C, S, D) over input "
                    f"{self.signal!r} {tuple(x.shape)} (C channels, T = S·P samples); got {tuple(view.shape)}"
                )
        if student_view.shape[2] != teacher_view.shape[2]:
            raise ConfigError(f"{where}: student and teacher cut the input into different patch counts")
        n_patches = teacher_view.shape[2]
        patches = x.reshape(x.shape[0], x.shape[1], n_patches, -1)
        teacher_dec = losses.fit_linear_decoder(teacher_view.float(), patches)
        teacher_dec.requires_grad_(False)
        distiller.projections[f"{self.name}__teacher"] = teacher_dec
        distiller.projections[self.name] = losses.fit_linear_decoder(student_view.float(), patches)
        return x.shape[-1]

    def signal_pair(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """The compared activity: decoded patches laid end to end ``(B, C, S·P)``, or the features as tapped."""
        s, t = self.pair(step)  # type: ignore[attr-defined]
        return (s.flatten(-2), t.flatten(-2)) if self.signal else (s, t)


@dataclass
class Spectral(_SignalRate, FeatureTerm):
    """Magnitude and phase spectra along a time axis sampled at ``sfreq`` Hz, optionally weighted by band.

    With ``signal: eeg`` the axis is the input's own (decoded patch tokens, ``sfreq`` from the data spec; see
    :class:`_SignalRate`) and bands are checked against its Nyquist frequency when the config is read.
    """

    kind_name: ClassVar[str] = "spectral"
    time_dim: int = -2
    magnitude: float = 1.0
    phase: float = 1.0
    #: Sampling rate (Hz) of the compared time axis; needed for bands, which are checked against it.
    sfreq: float | None = None
    bands: dict[str, float] | None = None
    #: Input key whose patches the tokens are decoded to (a signal-rate view); None compares the features as is.
    signal: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_signal_fields()
        if self.bands:
            if self.sfreq is None and not self.signal:
                raise ConfigError(f"term {self.name!r}: band weights need `sfreq`, the rate of the time axis in Hz")
            if unknown := [b for b in self.bands if b not in losses.EEG_BANDS]:
                raise ConfigError(
                    f"term {self.name!r}: unknown band(s) {unknown}; known: {', '.join(losses.EEG_BANDS)}"
                )

    def check(self, spec, task):
        n_times = self._check_signal(spec)
        if self.bands and n_times:
            self._check_bands(n_times)

    def _check_bands(self, n_times: int) -> None:
        try:
            losses.check_bands(n_times, self.sfreq, self.bands)  # type: ignore[arg-type]
        except (ConfigError, ValueError) as err:
            raise ConfigError(f"term {self.name!r}: {err}") from None

    def setup(self, distiller, teacher_view, student_view, batch=None):
        super().setup(distiller, teacher_view, student_view, batch)
        if self.signal:
            n = self._fit_decoders(distiller, teacher_view, student_view, batch)
        else:
            n = student_view.shape[self.time_dim]
        if self.bands:
            self._check_bands(n)

    def value(self, step):
        s, t = self.signal_pair(step)
        return losses.spectral_loss(
            s, t, sfreq=self.sfreq or 1.0, dim=-1 if self.signal else self.time_dim, bands=self.bands,
            magnitude=self.magnitude, phase=self.phase,
        )  # fmt: skip


@dataclass
class Connectivity(_SignalRate, FeatureTerm):
    """Channel-by-channel connectivity of student and teacher activity ``(B, C, T)``, compared by MSE of the
    off-diagonal entries: correlation of average-referenced channels, or band-limited coherence (``sfreq``).

    With ``signal: eeg`` the activity is the decoded signal-rate view of patch tokens (:class:`_SignalRate`);
    without it, trailing axes of the tapped features are flattened into one.
    """

    kind_name: ClassVar[str] = "connectivity"
    needs_projection: ClassVar[bool] = False
    measure: Literal["correlation", "coherence"] = "correlation"
    sfreq: float | None = None
    band: list[float] | None = None
    #: Input key whose patches the tokens are decoded to (a signal-rate view); None compares the features as is.
    signal: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_signal_fields()
        needs_rate = self.sfreq is None and not self.signal
        if self.measure == "coherence" and (needs_rate or not self.band or len(self.band) != 2):
            raise ConfigError(f"term {self.name!r}: coherence needs `sfreq` and `band: [low_hz, high_hz]`")

    def check(self, spec, task):
        self._check_signal(spec)

    def setup(self, distiller, teacher_view, student_view, batch=None):
        super().setup(distiller, teacher_view, student_view, batch)
        t = teacher_view[:, 0] if len(self.teacher) > 1 else teacher_view
        try:
            losses.check_channels(student_view.shape[1], t.shape[1], f"term {self.name!r}")
        except ConfigError as err:
            raise ConfigError(f"{err} (student {self.student!r}, teacher {self.teacher})") from None
        if self.signal:
            self._fit_decoders(distiller, teacher_view, student_view, batch)

    def value(self, step):
        s, t = self.signal_pair(step)
        if self.measure == "coherence":
            band = tuple(self.band)  # type: ignore[arg-type]
            return losses.connectivity_loss(s.flatten(2), t.flatten(2), kind="coherence", sfreq=self.sfreq, band=band)
        return losses.connectivity_loss(s.flatten(2), t.flatten(2))


@dataclass
class Alignment(FeatureTerm):
    """Embedding alignment for cross-modal and graph KD: ``cka`` (1 − linear CKA over the batch), ``info_nce``
    (contrastive, positives = the same item), ``relational`` (RKD distances between items) or ``similarity``
    (node-by-node similarity structure, e.g. ROI × ROI), on pooled features ``(B, D)`` or nodes ``(B, N, D)``."""

    kind_name: ClassVar[str] = "alignment"
    metric: Literal["cka", "info_nce", "relational", "similarity"] = "cka"
    temperature: float = 0.1

    @property
    def needs_projection(self) -> bool:  # type: ignore[override]
        return self.metric == "info_nce"

    def value(self, step):
        s, t = self.pair(step)
        if self.metric == "similarity":
            return losses.similarity_structure(s, t)
        s, t = s.flatten(1), t.flatten(1)
        if self.metric == "cka":
            return losses.cka_loss(s, t)
        if self.metric == "relational":
            return losses.relational_distance(s, t)
        return losses.info_nce(s, t, self.temperature)


def pool_features(x: torch.Tensor, pool: str | list[int]) -> torch.Tensor:
    """Average ``x`` over the axes named by ``pool`` (keeps batch and feature axes for ``"all"``)."""
    if pool == "none":
        return x
    if pool == "all":
        return x.flatten(1, -2).mean(dim=1) if x.dim() > 2 else x
    return x.mean(dim=tuple(pool))


#: Term kind → class. Round-1 kinds ``cross_entropy`` and ``mse`` name the task loss.
TERMS: dict[str, type[Term]] = {
    cls.kind_name: cls for cls in (TaskLoss, KD, OutputMatch, Feature, Spectral, Connectivity, Alignment)
}
TERMS["cross_entropy"] = TaskLoss
TERMS["mse"] = TaskLoss


def register_term(cls: type[Term]) -> type[Term]:
    """Class decorator: make ``cls`` available to configs under ``cls.kind_name``."""
    TERMS[cls.kind_name] = cls
    return cls


def term_dict(term: Term) -> dict[str, Any]:
    return dataclasses.asdict(term)
