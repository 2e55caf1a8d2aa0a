"""Subject-wise splits. Every split helper splits subjects, never samples; training checks for leaks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import LeakageError

SPLITS = ("train", "val", "test")


def fixed_split(subject: int, ranges: Mapping[str, tuple[int, int]]) -> str | None:
    """Name of the split whose inclusive ``(first, last)`` range holds ``subject``, else None."""
    for name, (first, last) in ranges.items():
        if first <= subject <= last:
            return name
    return None


def check_split_ranges(ranges: Mapping[str, tuple[int, int]]) -> None:
    """Refuse empty or overlapping inclusive subject ranges (a subject must be in one split only)."""
    from .errors import ConfigError

    for name, (first, last) in ranges.items():
        if first > last:
            raise ConfigError(f"{name}: range ({first}, {last}) is empty")
    spans = sorted((first, last, name) for name, (first, last) in ranges.items())
    for (_, last_a, a), (first_b, _, b) in itertools.pairwise(spans):
        if first_b <= last_a:
            raise ConfigError(f"split ranges {a} and {b} overlap: a subject must be in one split only")


def kfold_subjects(subjects: Iterable[str], n_folds: int, seed: int = 0) -> Iterator[dict[str, list[str]]]:
    """Yield ``{"train": [...], "test": [...]}`` for each of ``n_folds`` folds over unique subjects."""
    unique = np.array(sorted(set(subjects)))
    if n_folds < 2 or n_folds > len(unique):
        raise ValueError(f"n_folds must be in [2, {len(unique)}] for {len(unique)} subjects; got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(unique))
    for fold in np.array_split(order, n_folds):
        test = set(unique[fold].tolist())
        yield {"train": [s for s in unique.tolist() if s not in test], "test": sorted(test)}


def leave_site_out(subject_sites: Mapping[str, str]) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """Yield ``(site, {"train": [...], "test": [...]})`` holding out one site at a time."""
    for site in sorted(set(subject_sites.values())):
        test = sorted(s for s, v in subject_sites.items() if v == site)
        train = sorted(s for s, v in subject_sites.items() if v != site)
        yield site, {"train": train, "test": test}


def check_no_leakage(splits: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`LeakageError` naming every subject found in more than one split."""
    seen: dict[str, set[str]] = {}
    for split, subjects in splits.items():
        for subject in set(subjects):
            seen.setdefault(str(subject), set()).add(split)
    leaks = {s: sorted(v) for s, v in seen.items() if len(v) > 1}
    if leaks:
        listed = ", ".join(f"subject {s} in {' and '.join(v)}" for s, v in sorted(leaks.items()))
        raise LeakageError(f"refusing to train: {listed}. Splits must be by subject.")
