"""Experiment tracking, opt-in (``train.track`` or ``--track``): TensorBoard event files or an MLflow store.

Nothing is logged anywhere unless asked. TensorBoard writes ``<run>/tensorboard/``; MLflow writes a local file
store ``<run>/mlruns`` (no server) unless ``train.track_uri`` names another. Per epoch: the training loss of
every term, the validation metrics and the router weights; at the end of a run: the resolved config (as
parameters and as a file) and the final report files as artefacts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KINDS = ("none", "tensorboard", "mlflow")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a history record, router weights flattened to ``router/<term>/<layer>``."""
    out = {k: float(v) for k, v in record.items() if k != "epoch" and isinstance(v, int | float)}
    for term, weights in (record.get("router_weights") or {}).items():
        out.update({f"router/{term}/{i}": float(w) for i, w in enumerate(weights)})
    return out


class Tracker:
    """No tracking (the default)."""

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Log one epoch's history record."""

    def finish(self, config: dict[str, Any], artefacts: Iterable[Path]) -> None:
        """Log the resolved config and the run's final files."""

    def close(self) -> None:
        """Flush and release."""


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_epoch(self, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, int(record["epoch"]))

    def finish(self, config: dict[str, Any], artefacts: Iterable[Path]) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")
        for path in artefacts:
            if path.suffix in (".md", ".json", ".yaml") and path.is_file():
                self.writer.add_text(f"files/{path.name}", path.read_text())

    def close(self) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per run folder (a resumed run continues the same MLflow run)."""

    def __init__(self, run_dir: Path, uri: str | None):
        import os

        from mlflow.tracking import MlflowClient

        # MLflow 3 keeps its file store (in maintenance) behind this switch; a database URI needs no switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri or (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        id_file = run_dir / "mlflow_run.json"
        known = json.loads(id_file.read_text()) if id_file.is_file() else {}
        if known.get("uri") == self.uri:
            self.run_id = known["run_id"]
        else:
            exp = self.client.get_experiment_by_name("biokd")
            exp_id = exp.experiment_id if exp else self.client.create_experiment("biokd")
            self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            from ._io import write_json

            write_json(id_file, {"uri": self.uri, "run_id": self.run_id})

    def log_epoch(self, record: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "."), v, stamp, int(record["epoch"])) for k, v in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, config: dict[str, Any], artefacts: Iterable[Path]) -> None:
        from mlflow.entities import Param

        flat = _flatten(config)
        params = [Param(k, str(v)[:500]) for k, v in flat.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        for path in artefacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def open_tracker(kind: str, run_dir: str | Path, uri: str | None = None) -> Tracker:
    """The tracker ``kind`` names (``none``: one that logs nothing)."""
    from .errors import ConfigError

    run_dir = Path(run_dir)
    if kind == "none":
        return Tracker()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "tensorboard":
            return TensorBoardTracker(run_dir)
        if kind == "mlflow":
            return MlflowTracker(run_dir, uri)
    except ImportError as err:
        raise ConfigError(f"train.track={kind}: {err.name} is not installed (pip install 'biokd[scale]')") from None
    raise ConfigError(f"train.track: {kind!r} is not one of {', '.join(KINDS)}")


def finish_run(kind: str, run_dir: str | Path, config: dict[str, Any], uri: str | None = None) -> None:
    """Log the resolved config and the run folder's final files (config, metrics, reports) to the tracker."""
    from . import parallel

    if kind == "none" or not parallel.is_main():
        return
    run_dir = Path(run_dir)
    tracker = open_tracker(kind, run_dir, uri)
    names = ("config.yaml", "metrics.json", "report.md", "report.html", "history.json")
    tracker.finish(config, [run_dir / n for n in names])
    tracker.close()
