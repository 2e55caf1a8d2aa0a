"""MRI benchmarks: OASIS-3 preprocessing throughput on generated subjects; teacher vs student size and cost.

    python benchmarks/bench_mri.py --subjects 20 --voxel-mm 4 --size 48 56 48
    python benchmarks/bench_mri.py --models          # BiomedCLIP architecture (random init) vs MriResNet

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--voxel-mm", type=float, default=4.0)
    parser.add_argument("--size", type=int, nargs=3, default=[48, 56, 48])
    parser.add_argument("--models", action="store_true", help="teacher vs student size and cost instead")
    args = parser.parse_args()
    if args.models:
        print(json.dumps(bench_models([96, 112, 96]), indent=2))
    else:
        print(json.dumps(bench_preprocess(args.subjects, args.voxel_mm, args.size), indent=2))


if __name__ == "__main__":
    main()
