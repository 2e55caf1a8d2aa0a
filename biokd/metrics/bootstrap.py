"""Bootstrap confidence intervals as integer resample weights, so a statistic runs on many resamples at once.

A resample is a vector of counts, one per sample: how often that sample appears in the resampled set. With
``clusters`` (e.g. subjects) whole clusters are drawn with replacement and every sample of a drawn cluster
gets that cluster's count (the cluster bootstrap); without, samples are drawn one by one.

Written here because scikit-learn's ``resample`` and scipy's ``bootstrap`` draw one resample at a time and
have no cluster resampling; metrics computed from weighted counts need the whole weight matrix at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

#: Resamples drawn per block: bounds memory at ``CHUNK × n_samples`` weights; part of the random stream.
CHUNK = 100

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def cluster_codes(clusters: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique cluster ids (sorted) and, per sample, the index of its cluster among them."""
    values = np.asarray([str(c) for c in clusters])
    unique, codes = np.unique(values, return_inverse=True)
    return unique, codes.reshape(-1)


def resample_weights(
    n_samples: int,
    clusters: Sequence[Any] | np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Yield blocks of float64 weights ``(b, n_samples)``, ``n_boot`` rows in all, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    if clusters is None:
        codes, n_units = None, n_samples
    else:
        _, codes = cluster_codes(clusters)
        if len(codes) != n_samples:
            raise ValueError(f"clusters has {len(codes)} entries for {n_samples} samples")
        n_units = int(codes.max()) + 1 if len(codes) else 0
    done = 0
    while done < n_boot:
        b = min(CHUNK, n_boot - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        offsets = (np.arange(b) * n_units)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_units).reshape(b, n_units)
        weights = counts if codes is None else counts[:, codes]
        yield weights.astype(np.float64)
        done += b


def percentile_interval(values: np.ndarray, ci: float = 0.95) -> list[float | None]:
    """Percentile interval of bootstrap ``values``, ignoring resamples where the statistic is undefined."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [None, None]
    low, high = np.quantile(finite, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return [float(low), float(high)]


def bootstrap_ci(
    statistic: Statistic,
    n_samples: int,
    clusters: Sequence[Any] | np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile CIs of every entry of ``statistic(weights) -> {name: (b,) values}``.

    Returns ``{"ci": {name: [low, high]}, "ci_level", "ci_unit" ("cluster"/"sample"), "n_boot",
    "n_units"}``; callers rename ``ci_unit`` to what the clusters are (e.g. ``"subject"``).
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1; got {n_boot}")
    collected: dict[str, list[np.ndarray]] = {}
    for weights in resample_weights(n_samples, clusters, n_boot=n_boot, seed=seed):
        for name, values in statistic(weights).items():
            collected.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    n_units = n_samples if clusters is None else len(cluster_codes(clusters)[0])
    return {
        "ci": {name: percentile_interval(np.concatenate(parts), ci) for name, parts in collected.items()},
        "ci_level": ci,
        "ci_unit": "sample" if clusters is None else "cluster",
        "n_boot": n_boot,
        "n_units": n_units,
    }
