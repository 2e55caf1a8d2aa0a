"""MRI benchmarks: OASIS-3 preprocessing throughput on generated subjects; teacher vs student size and cost.

    python benchmarks/bench_mri.py --subjects 20 --voxel-mm 4 --size 48 56 48
    python benchmarks/bench_mri.py --models          # BiomedCLIP architecture (random init) vs MriResNet
    python benchmarks/bench_mri.py --distill --subjects 12   # one distillation epoch: live teacher vs its cache

The data are generated (nilearn's MNI152 template); the teacher is the released architecture, randomly
initialised (its cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def bench_preprocess(n_subjects: int, voxel_mm: float, size: list[int]) -> dict:
    from biokd.mri.oasis3 import Oasis3Protocol, find_subjects, process_subject
    from biokd.mri.synthetic import write_synthetic_oasis3

    root = Path(tempfile.mkdtemp(prefix="bench-oasis3-"))
    start = time.perf_counter()
    write_synthetic_oasis3(root, n_subjects=n_subjects, seed=0, voxel_mm=voxel_mm)
    written = time.perf_counter() - start
    protocol = Oasis3Protocol(pixdim=(voxel_mm,) * 3, spatial_size=tuple(size))
    import monai.transforms  # noqa: F401  (import time, about 10 s, is not preprocessing)

    start = time.perf_counter()
    found = find_subjects(root, protocol)
    visits = sum(len(process_subject(s, paths, protocol).rows) for s, paths in found.items())
    took = time.perf_counter() - start
    return {
        "subjects": n_subjects,
        "visits": visits,
        "voxel_mm": voxel_mm,
        "size": size,
        "write_s": round(written, 2),
        "preprocess_s": round(took, 2),
        "subjects_per_s": round(n_subjects / took, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bench_models(size: list[int]) -> dict:
    import torch

    from biokd.mri._torchvision_fix import ensure_torchvision_importable
    from biokd.mri.student import MriResNet
    from biokd.profiling import count_flops, count_parameters

    ensure_torchvision_importable()  # before open_clip imports torchvision
    import open_clip

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-biomedclip-"))
    bert = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}  # fmt: skip
    (tmp / "bert").mkdir()
    (tmp / "bert" / "config.json").write_text(json.dumps(bert))
    vision = {"timm_model_name": "vit_base_patch16_224", "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    text = {"hf_model_name": str(tmp / "bert"), "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler"}
    cfg = {"model_cfg": {"embed_dim": 512, "vision_cfg": vision, "text_cfg": {**text, "context_length": 256}}}
    (tmp / "open_clip_config.json").write_text(json.dumps(cfg))
    clip = open_clip.create_model(f"local-dir:{tmp}", load_weights=False, pretrained_text=False).eval()
    image = torch.rand(1, 3, 224, 224)
    student = MriResNet().eval()
    volume = torch.rand(1, 1, *size)

    def latency(fn, *args) -> float:
        with torch.no_grad():
            fn(*args)
            start = time.perf_counter()
            fn(*args)
            return time.perf_counter() - start

    return {
        "clip_parameters": count_parameters(clip),
        "vision_parameters": count_parameters(clip.visual),
        "vision_flops_per_image": count_flops(clip.visual, (image,)),
        "vision_latency_s_per_image": round(latency(clip.visual, image), 3),
        "student_parameters": count_parameters(student),
        "student_flops_per_visit": count_flops(student, (volume,)),
        "student_latency_s_per_visit": round(latency(student, volume), 4),
        "volume": size,
    }


def _epoch_seconds(learner, data, batch_size: int, cache=None) -> float:
    """Wall time of one training epoch over ``data`` (teacher outputs from ``cache`` when given)."""
    import torch
    from torch.utils.data import DataLoader

    from biokd.trainer import collate

    opt = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=1e-3)
    learner.train()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for batch in DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=gen):
        teacher_out = cache.lookup(batch["index"], "cpu") if cache is not None else None
        loss, _ = learner.training_step(batch, teacher_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def bench_distill_epoch(n_subjects: int, voxel_mm: float, size: list[int], vision_model: str, n_groups: int) -> dict:
    """One distillation epoch (the demo's terms) with the live PET-guided teacher, then with its cache."""
    import torch

    from biokd.data.reader import ShardDataset
    from biokd.distill.cache import build_cache, data_fingerprint, hash_state_dict
    from biokd.distill.distiller import Distiller
    from biokd.mri.biomedclip import BiomedClipTeacher
    from biokd.mri.demo import MriDemoConfig, run_configs
    from biokd.mri.oasis3 import Oasis3Protocol, preprocess_oasis3
    from biokd.mri.student import MriResNet
    from biokd.mri.synthetic import write_synthetic_oasis3
    from biokd.tasks import task_for
    from biokd.trainer import Supervised, collate

    root = Path(tempfile.mkdtemp(prefix="bench-mri-distill-"))
    write_synthetic_oasis3(root / "oasis3", n_subjects=n_subjects, seed=0, voxel_mm=voxel_mm)
    protocol = Oasis3Protocol(pixdim=(voxel_mm,) * 3, spatial_size=tuple(size), n_folds=3, seed=0)
    preprocess_oasis3(root / "oasis3", root / "store", protocol, skip_bad=True, progress=False)
    train = ShardDataset(root / "store", "train")
    task = task_for(train.spec)
    torch.manual_seed(0)
    embed = {"vit_base_patch16_224": 512}.get(vision_model, 64)  # BiomedCLIP's projection width; tiny: the demo's
    teacher = BiomedClipTeacher(n_groups=n_groups, vision_model=vision_model, embed_dim=embed).eval()
    terms = run_configs(MriDemoConfig(), root, root, root, seed=0)[1].distill.terms
    distiller = Distiller(MriResNet(), teacher, terms, task)
    distiller.setup(collate([train[0], train[1]]))
    batch_size = 8
    live = _epoch_seconds(distiller, train, batch_size)
    start = time.perf_counter()
    key = {"teacher": hash_state_dict(teacher), "data": data_fingerprint(root / "store")}
    cache = build_cache(root / "cache", distiller.teacher_targets, train, key, batch_size=batch_size, progress=False,
                        log=lambda m: None)  # fmt: skip
    build = time.perf_counter() - start
    cached = _epoch_seconds(distiller, train, batch_size, cache)
    alone = _epoch_seconds(Supervised(MriResNet(), task), train, batch_size)
    return {
        "train_visits": len(train),
        "volume": size,
        "teacher": f"{vision_model}, {n_groups} slice groups x (MRI + PET), random init",
        "threads": torch.get_num_threads(),
        "live_teacher_epoch_s": round(live, 2),
        "cache_build_s": round(build, 2),
        "cached_epoch_s": round(cached, 2),
        "student_alone_epoch_s": round(alone, 2),
        "speed_up": round(live / cached, 1),
        "cache_kib": round(cache.nbytes / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--voxel-mm", type=float, default=4.0)
    parser.add_argument("--size", type=int, nargs=3, default=[48, 56, 48])
    parser.add_argument("--models", action="store_true", help="teacher vs student size and cost instead")
    parser.add_argument("--distill", action="store_true", help="one distillation epoch, live teacher vs cache")
    parser.add_argument("--vision-model", default="vit_base_patch16_224", help="teacher ViT (timm name)")
    parser.add_argument("--groups", type=int, default=5, help="teacher slice groups per volume")
    args = parser.parse_args()
    if args.distill:
        result = bench_distill_epoch(args.subjects, args.voxel_mm, args.size, args.vision_model, args.groups)
        print(json.dumps(result, indent=2))
    elif args.models:
        print(json.dumps(bench_models([96, 112, 96]), indent=2))
    else:
        print(json.dumps(bench_preprocess(args.subjects, args.voxel_mm, args.size), indent=2))


if __name__ == "__main__":
    main()
