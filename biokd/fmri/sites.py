"""Leave-one-site-out over every site of an ABIDE release: one store per held-out site (the split is part of the
build), then the core pipeline once per site (teacher, distilled student, student alone)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._io import write_json
from ..pipeline import ModelConfig, RunConfig, distill, train_teacher
from .abide import AbideProtocol, read_phenotypic, select_phenotypes
from .preprocess import preprocess_abide

METRICS = ("auroc", "balanced_accuracy", "sensitivity", "specificity")


def leave_site_out(
    root: str | Path,
    out: str | Path,
    teacher: RunConfig,
    student: RunConfig,
    protocol: AbideProtocol | None = None,
    sites: list[str] | None = None,
    phenotypic: str | Path | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """For each site (default: every site of the protocol's subjects): preprocess with that site as the test
    split, train the teacher, distil the student (beside it alone). Writes ``leave_site_out.json``."""
    from .abide import find_phenotypic

    protocol = protocol or AbideProtocol()
    out = Path(out)
    table = select_phenotypes(read_phenotypic(find_phenotypic(root, phenotypic)), protocol)
    sites = sites or sorted(set(table["SITE_ID"].astype(str)))
    rows: list[dict[str, Any]] = []
    for site in sites:
        proto = dataclasses.replace(protocol, split="leave_one_site_out", test_site=site)
        store = out / f"store-{site}"
        preprocess_abide(root, store, proto, phenotypic, jobs=jobs, progress=False)
        t_cfg = dataclasses.replace(teacher, data=dataclasses.replace(teacher.data, root=str(store)))
        train_teacher(t_cfg, out / site / "teacher")
        s_cfg = dataclasses.replace(
            student,
            data=dataclasses.replace(student.data, root=str(store)),
            teacher=ModelConfig(run=str(out / site / "teacher")),
        )
        metrics = distill(s_cfg, out / site / "student")
        for name in ("teacher", "student (distilled)", "student (alone)"):
            if name in metrics:
                rep = metrics[name]
                rows.append({"site": site, "model": name, "subjects": rep.get("n_units"),
                             **{m: rep.get(m) for m in METRICS}})  # fmt: skip
    write_json(out / "leave_site_out.json", {"rows": rows, "sites": sites})
    return {"rows": rows, "sites": sites}
