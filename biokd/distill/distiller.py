"""The Distiller: a frozen teacher and a student on the same batch, a weighted sum of named loss terms.

A term (see :mod:`biokd.distill.terms`) reads the models' outputs or intermediate features captured by taps
(forward hooks on named submodules). Projections and routers belong to the Distiller, never to the student,
so the exported student is only its own graph. The teacher may read inputs the student never sees: each model
takes the batch keys it declares.

A router is trained by task relevance, not by the alignment it serves: a linear probe on the aggregated
teacher target learns the task (weight ``router_probe``), and only that loss reaches the router. Trained by
the alignment loss alone, a router collapses onto whichever layer the student matches most easily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..batch import model_inputs
from ..errors import ConfigError
from ..tasks import Task
from .taps import Taps
from .terms import FeatureTerm, Step, Term, pool_features


def reads_teacher(terms: Sequence[Term]) -> bool:
    """Whether any term needs the teacher's outputs (else neither the teacher nor its cache is used)."""
    return any(t.reads_teacher for t in terms)


class Distiller(nn.Module):
    """Distil ``teacher`` into ``student`` with ``terms`` on ``task``."""

    def __init__(self, student: nn.Module, teacher: nn.Module, terms: Sequence[Term], task: Task):
        super().__init__()
        if not terms:
            raise ConfigError("distill.terms is empty: name at least the task loss")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"distill.terms names must be unique; got {names}")
        self.student = student
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.terms = list(terms)
        self.task = task
        self.n_outputs = task.n_outputs
        self.projections = nn.ModuleDict()
        self.routers = nn.ModuleDict()
        self.probes = nn.ModuleDict()
        self.feature_terms = [t for t in self.terms if isinstance(t, FeatureTerm)]
        try:
            self._teacher_taps = Taps(teacher, [p for t in self.feature_terms for p in t.teacher_layers()])
            self._student_taps = Taps(student, [t.student_module() for t in self.feature_terms])
        except KeyError as err:
            raise ConfigError(f"distill.terms: {err.args[0]}") from None
        self._ready = False
        self.progress = 0.0  # epoch / epochs, set by the trainer each epoch (scheduled terms read it)
        self.last_router_weights: dict[str, torch.Tensor] = {}
        self.probe_losses: dict[str, torch.Tensor] = {}

    # -- set-up --------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def setup(self, batch: dict[str, Any]) -> None:
        """Probe feature shapes on one batch and build the projections and routers the terms need."""
        views = self.teacher_targets(batch) if self.feature_terms else {}
        was_training = self.student.training
        self.student.eval()
        self.student(*model_inputs(self.student, batch))
        self.student.train(was_training)
        feats = self._student_taps.pop()
        for term in self.feature_terms:
            term.setup(self, views[f"view:{term.name}"], pool_features(feats[term.student], term.pool), batch)
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
        for term in self.feature_terms:
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
        if teacher_out is None and reads_teacher(self.terms):
            teacher_out = self.teacher_targets(batch)
        output = self.student(*model_inputs(self.student, batch))
        step = Step(output, self._student_taps.pop(), teacher_out or {}, batch, self.task, self, self.progress)
        self.probe_losses = {}
        total = output.new_zeros(())
        logs: dict[str, float] = {}
        for term in self.terms:
            value = term.value(step)
            total = total + term.weight * value
            logs[term.name] = float(value.detach())
        by_name = {t.name: t for t in self.feature_terms}
        for name, value in self.probe_losses.items():
            total = total + by_name[name].router_probe * value
            logs[f"{name}.router_probe"] = float(value.detach())
        logs["loss"] = float(total.detach())
        return total, logs
