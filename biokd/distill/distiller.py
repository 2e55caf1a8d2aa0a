"""The Distiller: a frozen teacher and a student on the same batch, a weighted sum of named loss terms.

A term reads the models' outputs or intermediate features captured by taps (forward hooks on named
submodules). Where widths differ a learned projection maps the student's feature to the teacher's; where a
term names several teacher layers, a per-input :class:`LayerRouter` aggregates them. Projections and
routers belong to the Distiller, never to the student, so the exported student is only its own graph.

A router is trained by task relevance, not by the alignment it serves: a linear probe on the aggregated
teacher target learns the task (weight ``router_probe``), and only that loss reaches the router. Trained by
the alignment loss alone, a router collapses onto whichever layer the student matches most easily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import model_inputs
from ..errors import ConfigError
from . import losses
from .router import LayerRouter
from .taps import Taps

TermKind = Literal["cross_entropy", "mse", "kd", "output_match", "feature", "spectral", "connectivity"]
FEATURE_KINDS = ("feature", "spectral", "connectivity")


@dataclass
class TermConfig:
    """One named, weighted loss term."""

    name: str
    kind: TermKind
    weight: float = 1.0
    #: cross_entropy: label smoothing; kd: temperature; output_match: softening of teacher outputs.
    label_smoothing: float = 0.0
    temperature: float = 1.0
    #: Feature terms: teacher module paths (several → routed) and the student module path.
    teacher: list[str] = field(default_factory=list)
    student: str | None = None
    #: Axes averaged out of both features before comparison ("none", "all" but batch and last, or indices).
    pool: str | list[int] = "none"
    metric: Literal["mse", "cosine"] = "mse"
    #: Spectral terms: time axis, weights of magnitude and phase, optional EEG band weights (needs sfreq).
    time_dim: int = -2
    magnitude: float = 1.0
    phase: float = 1.0
    sfreq: float | None = None
    bands: dict[str, float] | None = None
    router_hidden: int = 64
    #: Weight of the routed term's task probe (see :class:`Distiller`); it alone trains the router.
    router_probe: float = 1.0


def pool_features(x: torch.Tensor, pool: str | list[int]) -> torch.Tensor:
    """Average ``x`` over the axes named by ``pool`` (keeps batch and feature axes for ``"all"``)."""
    if pool == "none":
        return x
    if pool == "all":
        return x.flatten(1, -2).mean(dim=1) if x.dim() > 2 else x
    if isinstance(pool, str):
        raise ConfigError(f"pool must be 'none', 'all' or a list of axes; got {pool!r}")
    return x.mean(dim=tuple(pool))


class Distiller(nn.Module):
    """Distil ``teacher`` into ``student`` with ``terms``; ``task`` picks the label key and prediction."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        terms: list[TermConfig],
        task: Literal["classification", "regression"] = "classification",
    ):
        super().__init__()
        if not terms:
            raise ConfigError("distill.terms is empty: name at least a task loss")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"distill.terms names must be unique; got {names}")
        for term in terms:
            if term.kind in FEATURE_KINDS and (not term.teacher or not term.student):
                raise ConfigError(f"term {term.name!r} ({term.kind}) needs teacher layer(s) and a student module")
        self.student = student
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.terms = terms
        self._term_by_name = {t.name: t for t in terms}
        self.task = task
        self.target_key = "label" if task == "classification" else "target"
        self.projections = nn.ModuleDict()
        self.routers = nn.ModuleDict()
        self.probes = nn.ModuleDict()
        self._teacher_taps = Taps(teacher, [p for t in terms for p in t.teacher])
        self._student_taps = Taps(student, [t.student for t in terms if t.student])
        self._ready = False
        self.last_router_weights: dict[str, torch.Tensor] = {}

    # -- set-up --------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def setup(self, batch: dict[str, Any]) -> None:
        """Probe feature shapes on one batch and build the projections and routers they need."""
        views = self.teacher_targets(batch)
        was_training = self.student.training
        self.student.eval()
        n_outputs = self.student(*model_inputs(self.student, batch)).shape[-1]
        self.student.train(was_training)
        feats = self._student_taps.pop()
        for term in self.terms:
            if term.kind not in FEATURE_KINDS:
                continue
            t_view = views[f"view:{term.name}"]
            s_view = pool_features(feats[term.student], term.pool)  # type: ignore[index]
            t_dim = t_view.shape[-1]
            if len(term.teacher) > 1:
                self.routers[term.name] = LayerRouter(len(term.teacher), t_dim, term.router_hidden)
                self.probes[term.name] = nn.Linear(t_dim, n_outputs)
                t_view = t_view[:, 0]
            if term.kind != "connectivity" and s_view.shape[-1] != t_dim:
                self.projections[term.name] = nn.Linear(s_view.shape[-1], t_dim)
            if term.kind != "connectivity" and s_view.shape[1:-1] != t_view.shape[1:-1]:
                raise ConfigError(
                    f"term {term.name!r}: student feature {term.student!r} pools to {tuple(s_view.shape)} but the "
                    f"teacher's to {tuple(t_view.shape)}; all axes but the last must agree (set `pool`)"
                )
        self._ready = True

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the student and dropped at export (projections, routers, probes)."""
        return [*self.projections.parameters(), *self.routers.parameters(), *self.probes.parameters()]

    # -- teacher side ----------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_targets(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Everything the loss needs from the teacher: ``output`` and one pooled ``view:<term>`` per term.

        Routed terms stack their layers as ``(B, L, ...)``. This dict is what the teacher cache stores.
        """
        self.teacher.eval()
        out = {"output": self.teacher(*model_inputs(self.teacher, batch)).float()}
        feats = self._teacher_taps.pop()
        for term in self.terms:
            if term.kind in FEATURE_KINDS:
                views = [pool_features(feats[p], term.pool).float() for p in term.teacher]
                out[f"view:{term.name}"] = views[0] if len(views) == 1 else torch.stack(views, dim=1)
        return out

    # -- training --------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.student(*model_inputs(self.student, batch))

    predict = forward

    def training_step(
        self, batch: dict[str, Any], teacher_out: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the terms on ``batch``; ``teacher_out`` (from a cache) replaces the live teacher."""
        if not self._ready:
            raise RuntimeError("call Distiller.setup(batch) before training")
        needs_teacher = any(t.kind not in ("cross_entropy", "mse") for t in self.terms)
        if teacher_out is None and needs_teacher:
            teacher_out = self.teacher_targets(batch)
        output = self.student(*model_inputs(self.student, batch))
        feats = self._student_taps.pop()
        total = output.new_zeros(())
        logs: dict[str, float] = {}
        self._probe_losses: dict[str, torch.Tensor] = {}
        for term in self.terms:
            value = self._term(term, output, feats, teacher_out or {}, batch)
            total = total + term.weight * value
            logs[term.name] = float(value.detach())
        for name, value in self._probe_losses.items():
            total = total + self._term_by_name[name].router_probe * value
            logs[f"{name}.router_probe"] = float(value.detach())
        logs["loss"] = float(total.detach())
        return total, logs

    def _task_loss(self, output: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(output, batch[self.target_key])
        return F.mse_loss(output, batch[self.target_key].to(output.dtype))

    def _term(self, term: TermConfig, output, feats, teacher_out, batch) -> torch.Tensor:
        if term.kind == "cross_entropy":
            return F.cross_entropy(output, batch[self.target_key], label_smoothing=term.label_smoothing)
        if term.kind == "mse":
            return F.mse_loss(output, batch[self.target_key].to(output.dtype))
        if term.kind == "kd":
            return losses.kd_kl(output, teacher_out["output"].to(output.dtype), term.temperature)
        if term.kind == "output_match":
            return losses.output_match(output, teacher_out["output"].to(output.dtype), term.temperature)
        student = pool_features(feats[term.student], term.pool)
        teacher = teacher_out[f"view:{term.name}"].to(student.dtype)
        if term.name in self.routers:
            teacher, weights = self.routers[term.name](teacher)
            self.last_router_weights[term.name] = weights.detach()
            probe = self.probes[term.name](pool_features(teacher, "all"))
            self._probe_losses[term.name] = self._task_loss(probe, batch)
            teacher = teacher.detach()  # the alignment trains the student, not the router
        if term.kind == "connectivity":
            return losses.connectivity_loss(student, teacher)
        if term.name in self.projections:
            student = self.projections[term.name](student)
        if term.kind == "feature":
            fn = losses.feature_mse if term.metric == "mse" else losses.feature_cosine
            return fn(student, teacher)
        weights = None
        if term.bands:
            if term.sfreq is None:
                raise ConfigError(f"term {term.name!r}: band weights need `sfreq` of the time axis")
            weights = losses.band_weights(student.shape[term.time_dim], term.sfreq, term.bands, student.device)
        return losses.spectral_loss(
            student, teacher, dim=term.time_dim, magnitude=term.magnitude, phase=term.phase, weights=weights
        )
