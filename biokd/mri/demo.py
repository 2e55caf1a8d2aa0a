"""``biokd demo mri``: generated OASIS-3 subjects → the OASIS-3 loader → a PET-guided teacher of BiomedCLIP's
architecture (randomly initialised, saved and loaded through the same ``local-dir:`` path as the released
weights) → an MRI-only student distilled from it, beside the same student trained alone.

NOT real data and NOT the released BiomedCLIP: the report says so. Layout of ``out``::

    oasis3/          generated NIfTI in the OASIS-3 download layout, and the three tables
    store/           ``biokd preprocess oasis3`` output (pet=require: visits without a PET map are skipped)
    biomedclip-tiny/ open_clip folder (config, weights, tokenizer) of a tiny random BiomedCLIP-like model
    runs/teacher/    ``train-teacher`` run;  runs/student/: ``distill`` run (``alone/`` inside)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..distill.terms import KD, Alignment, Feature, TaskLoss
from ..pipeline import DataConfig, DistillConfig, ModelConfig, RunConfig, distill, train_teacher
from ..trainer import TrainConfig
from .biomedclip import write_tiny_biomedclip
from .oasis3 import Oasis3Protocol, preprocess_oasis3
from .synthetic import write_synthetic_oasis3

NOTES = [
    "The data were GENERATED from nilearn's MNI152 template (atrophy and amyloid-like PET uptake planted by label); "
    "they are not OASIS-3.",
    "The teacher is NOT the released BiomedCLIP: a tiny model of its architecture, randomly initialised, loaded "
    "through the same local-dir: path as the real weights. The numbers show that the pipeline works.",
]


@dataclass(frozen=True)
class MriDemoConfig:
    n_subjects: int = 24
    voxel_mm: float = 6.0
    pixdim: float = 6.0
    spatial_size: tuple[int, int, int] = (24, 32, 24)
    n_folds: int = 4
    teacher_epochs: int = 6
    student_epochs: int = 12
    n_boot: int = 200
    #: the teacher's ViT input (BiomedCLIP's is 224); the quick run feeds 32 (4 patches per slice group; timm
    #: resamples the released folder's position embeddings)
    image_size: int = 224


# A smoke test: every step runs, no figure worth reading (the tiny teacher sees 4 patches per slice group).
QUICK = MriDemoConfig(n_subjects=12, voxel_mm=8.0, pixdim=8.0, spatial_size=(16, 20, 16), n_folds=3,
                      teacher_epochs=1, student_epochs=2, n_boot=20, image_size=32)  # fmt: skip


def run_configs(cfg: MriDemoConfig, store: Path, weights: Path, teacher_run: Path, seed: int) -> tuple[RunConfig, ...]:
    """The ``train-teacher`` and ``distill`` configs of the demo (as configs/oasis3-*.yaml, smaller)."""

    def train(epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=8, lr=1e-3, weight_decay=0.01, seed=seed, amp=False,
                           select_metric="auroc", progress=False)  # fmt: skip

    data = DataConfig(root=str(store))
    teacher_kwargs = {"vision_model": "vit_tiny_patch16_224", "embed_dim": 64, "n_groups": 2, "fused_dim": 32,
                      "n_heads": 2, "image_size": cfg.image_size}  # fmt: skip
    teacher = RunConfig(
        data=data,
        teacher=ModelConfig(name="biomedclip", kwargs=teacher_kwargs, weights=str(weights)),
        train=train(cfg.teacher_epochs),
        label_smoothing=0.0,
        n_boot=cfg.n_boot,
        notes=list(NOTES),
    )
    terms = [
        TaskLoss("task", weight=0.4),
        KD("kd", weight=0.2, temperature=2.5, temperature_end=1.0, anneal=[0.05, 0.2]),  # the seed work's schedule
        Feature("feature", weight=0.4, metric="normalized_mse", teacher=["embedding"], student="embedding"),
        Alignment("cka", weight=0.2, metric="cka", teacher=["embedding"], student="embedding"),
        Alignment(
            "nce",
            weight=0.1,
            metric="info_nce",
            teacher=["embedding"],
            student="embedding",
            projection="shared",
            shared_dim=16,
        ),
    ]
    student = RunConfig(
        data=data,
        teacher=ModelConfig(run=str(teacher_run)),
        student=ModelConfig(name="mri_resnet", kwargs={"widths": [4, 8, 16, 16], "embed_dim": 32}),
        distill=DistillConfig(terms=terms),
        train=train(cfg.student_epochs),
        n_boot=cfg.n_boot,
        notes=list(NOTES),
    )
    return teacher, student


def run_demo(out: str | Path, cfg: MriDemoConfig = MriDemoConfig(), seed: int = 0) -> Path:
    """Generate, preprocess, train the teacher, distil the student; returns the distillation report."""
    import torch

    out = Path(out)
    torch.manual_seed(seed)
    write_synthetic_oasis3(out / "oasis3", n_subjects=cfg.n_subjects, seed=seed, voxel_mm=cfg.voxel_mm)
    protocol = Oasis3Protocol(pixdim=(cfg.pixdim,) * 3, spatial_size=cfg.spatial_size, n_folds=cfg.n_folds,
                              seed=seed, pet="require")  # fmt: skip
    # skip_bad: the generated cohort holds a subject without any PET map on purpose (skipped and listed)
    preprocess_oasis3(out / "oasis3", out / "store", protocol, skip_bad=True, progress=False)
    weights = write_tiny_biomedclip(out / "biomedclip-tiny", seed=seed)
    teacher_cfg, student_cfg = run_configs(cfg, out / "store", weights, out / "runs" / "teacher", seed)
    train_teacher(teacher_cfg, out / "runs" / "teacher", restart=True)
    distill(student_cfg, out / "runs" / "student", restart=True)
    return out / "runs" / "student" / "report.md"


def cli_demo(out: Path, quick: bool, seed: int) -> Path:
    return run_demo(out, QUICK if quick else MriDemoConfig(), seed)
