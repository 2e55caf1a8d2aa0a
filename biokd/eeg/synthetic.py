"""Simulated motor-imagery EEG written in the exact EEGMMIDB release format (EDF+, 64 dotted labels, T0/T1/T2).

The signal is 1/f background EEG plus mu (8–12 Hz) and beta (18–26 Hz) rhythms from three sensorimotor
sources (left hand area under C3, right hand area under C4, feet area under Cz), spread over the scalp with
Gaussian volume conduction. During a task cue the sources show event-related desynchronisation (ERD):

* left fist → ERD of the right-hemisphere source (C4 side), right fist → left (C3 side);
* both fists → both lateral sources; both feet → the central source, the lateral ones slightly enhanced.

Peak frequencies, ERD depth, rhythm and background amplitudes vary from subject to subject. Files go through
:func:`biokd.eeg.physionet_mi.preprocess_physionet_mi` exactly as the real release does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .._io import atomic_path
from .physionet_mi import RELEASE_CHANNELS, run_path, standard_channel_names

#: per class: ERD depth factor of the (left-hand, right-hand, feet) sources; negative = enhancement (ERS)
_ERD_PATTERN = {
    "left_fist": (0.2, 1.0, 0.0),
    "right_fist": (1.0, 0.2, 0.0),
    "both_fists": (0.85, 0.85, 0.0),
    "both_feet": (-0.15, -0.15, 1.0),
}
_SOURCES = ("C3", "C4", "Cz")
# Release header values: integer µV in a ±8092 range, 1-second data records.
_PHYS_RANGE = 8092


@dataclass(frozen=True)
class _Subject:
    """Subject-specific physiology drawn once per subject."""

    mu_freq: float
    beta_freq: float
    mu_uv: float
    beta_uv: float
    background_uv: float
    erd_depth: float
    line_uv: float
    positions: np.ndarray  # (3, 3) source positions in metres


def write_synthetic_eegmmidb(
    root: str | Path,
    subjects: Iterable[int] = (1, 2, 3, 4, 5, 6),
    runs: Iterable[int] = (4, 6, 8, 10, 12, 14),
    seed: int = 0,
    n_trials_per_run: int = 15,
    sfreq: float = 160.0,
    trial_s: float = 4.1,
    rest_s: float = 4.2,
    erd_depth: float = 0.6,
) -> list[Path]:
    """Write ``<root>/S###/S###R##.edf`` files like the EEGMMIDB release; returns the paths written.

    Each run alternates rest (T0, ``rest_s``) and ``n_trials_per_run`` task cues (T1/T2, ``trial_s``), as the
    release does (15 of each, 125 s). Runs 4/8/12 (and 3/7/11) hold left/right fist cues, the others both
    fists/both feet. ``erd_depth`` is the mean relative drop of rhythm amplitude during a cue (0–1).
    """
    if n_trials_per_run < 2:
        raise ValueError(f"n_trials_per_run must be at least 2 (one T1 and one T2); got {n_trials_per_run}")
    if sfreq != int(sfreq):
        raise ValueError(f"sfreq must be a whole number of Hz (EDF stores samples per 1-s record); got {sfreq}")
    positions = _channel_positions()
    paths = []
    for subject in subjects:
        params = _draw_subject(np.random.default_rng((seed, subject)), positions, erd_depth)
        for run in runs:
            rng = np.random.default_rng((seed, subject, run))
            path = run_path(root, subject, run)
            _write_run(path, rng, params, positions, run, n_trials_per_run, int(sfreq), trial_s, rest_s)
            paths.append(path)
    return paths


def _write_run(
    path: Path,
    rng: np.random.Generator,
    subject: _Subject,
    positions: np.ndarray,
    run: int,
    n_trials: int,
    sfreq: int,
    trial_s: float,
    rest_s: float,
) -> None:
    left_right = run in (3, 4, 7, 8, 11, 12)
    n_t1 = n_trials // 2 + int(n_trials % 2 and rng.random() < 0.5)
    cues = rng.permutation(["T1"] * n_t1 + ["T2"] * (n_trials - n_t1))
    annotations: list[tuple[float, float, str]] = []
    t = 0.0
    for cue in cues:
        annotations.append((round(t, 4), rest_s, "T0"))
        t += rest_s
        annotations.append((round(t, 4), trial_s, str(cue)))
        t += trial_s
    n_records = math.ceil(t + 0.5)
    n = n_records * sfreq
    classes = ("left_fist", "right_fist") if left_right else ("both_fists", "both_feet")
    data = _simulate(rng, subject, positions, annotations, classes, n, sfreq)
    _write_edf(path, data, sfreq, annotations)


def _simulate(
    rng: np.random.Generator,
    subject: _Subject,
    positions: np.ndarray,
    annotations: list[tuple[float, float, str]],
    classes: tuple[str, str],
    n: int,
    sfreq: int,
) -> np.ndarray:
    """(64, n) µV: background, modulated sensorimotor rhythms, posterior alpha and a little line noise."""
    n_ch = len(RELEASE_CHANNELS)
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    pink = 1 / np.sqrt(np.maximum(freqs, 0.5))  # amplitude ∝ f^-1/2 → power ∝ 1/f
    pink[0] = 0.0
    background = _shaped_noise(rng, (n_ch, n), pink) * subject.background_uv

    # Envelope of each source: 1 at rest, 1 - depth during a cue (ERD starts ~0.5 s after the cue).
    envelope = np.ones((len(_SOURCES), n))
    for onset, duration, cue in annotations:
        if cue == "T0":
            continue
        pattern = np.asarray(_ERD_PATTERN[classes[0] if cue == "T1" else classes[1]])
        depth = pattern * subject.erd_depth * rng.uniform(0.7, 1.2)
        start, stop = int((onset + 0.5) * sfreq), min(int((onset + duration + 0.3) * sfreq), n)
        envelope[:, start:stop] -= depth[:, None] * _smooth_box(stop - start, int(0.4 * sfreq))[None, :]

    mu = _shaped_noise(rng, (len(_SOURCES), n), _band(freqs, subject.mu_freq, 1.2)) * subject.mu_uv
    beta = _shaped_noise(rng, (len(_SOURCES), n), _band(freqs, subject.beta_freq, 2.5)) * subject.beta_uv
    rhythms = envelope * (mu + beta)

    dist = np.linalg.norm(positions[:, None, :] - subject.positions[None, :, :], axis=-1)
    mixing = np.exp(-(dist**2) / (2 * 0.03**2))  # (64, 3), ~3 cm spread
    signal = background + mixing @ rhythms

    # Posterior alpha (eyes-open, not task related) and mains interference at 60 Hz.
    occipital = np.exp(-((positions[:, 1] + 0.1) ** 2) / (2 * 0.03**2))
    alpha = _shaped_noise(rng, (1, n), _band(freqs, subject.mu_freq - 0.5, 1.0)) * subject.mu_uv * 0.8
    signal += occipital[:, None] * alpha
    if sfreq > 120:
        gains = rng.uniform(0.5, 1.5, (n_ch, 1))
        signal += gains * subject.line_uv * np.sin(2 * np.pi * 60 * np.arange(n) / sfreq)[None, :]
    return signal


def _shaped_noise(rng: np.random.Generator, shape: tuple[int, int], spectrum: np.ndarray) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``spectrum``, scaled to unit RMS per row."""
    spec = np.fft.rfft(rng.standard_normal(shape, dtype=np.float32), axis=-1) * spectrum.astype(np.float32)
    x = np.fft.irfft(spec, n=shape[1], axis=-1)
    return x / np.maximum(x.std(axis=-1, keepdims=True), 1e-12)


def _smooth_box(length: int, ramp: int) -> np.ndarray:
    """Ones with raised-cosine edges of ``ramp`` samples (shortened to fit ``length``)."""
    box = np.ones(max(length, 0))
    ramp = min(ramp, length // 2)
    if ramp > 0:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        box[:ramp], box[-ramp:] = edge, edge[::-1]
    return box


def _band(freqs: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((freqs - centre) / width) ** 2)


def _draw_subject(rng: np.random.Generator, positions: np.ndarray, erd_depth: float) -> _Subject:
    names = standard_channel_names()
    centres = np.stack([positions[names.index(s)] for s in _SOURCES])
    return _Subject(
        mu_freq=rng.uniform(9.0, 12.0),
        beta_freq=rng.uniform(18.0, 26.0),
        mu_uv=rng.uniform(7.0, 12.0),
        beta_uv=rng.uniform(2.5, 4.5),
        background_uv=rng.uniform(9.0, 14.0),
        erd_depth=float(np.clip(erd_depth * rng.uniform(0.75, 1.25), 0.0, 0.95)),
        line_uv=rng.uniform(0.5, 3.0),
        positions=centres + rng.normal(0, 0.006, centres.shape),
    )


@functools.cache
def _channel_positions() -> np.ndarray:
    """(64, 3) scalp positions (metres) of the release channels from MNE's template 10-05 montage."""
    import mne

    available = mne.channels.get_builtin_montages()
    name = next(m for m in ("colin27_1005", "standard_1005") if m in available)
    pos = mne.channels.make_standard_montage(name).get_positions()["ch_pos"]
    return np.stack([pos[c] for c in standard_channel_names()])


def _write_edf(path: Path, data: np.ndarray, sfreq: int, annotations: list[tuple[float, float, str]]) -> None:
    """EDF+C with the release's header values (BCI2000, integer µV in ±8092, 1-s records), written atomically."""
    import pyedflib

    headers = [
        {
            "label": label,
            "dimension": "uV",
            "sample_frequency": sfreq,
            "physical_max": float(_PHYS_RANGE),
            "physical_min": float(-_PHYS_RANGE),
            "digital_max": _PHYS_RANGE,
            "digital_min": -_PHYS_RANGE,
            "prefilter": "HP:0Hz LP:0Hz N:0Hz",
            "transducer": "BCI2000",
        }
        for label in RELEASE_CHANNELS
    ]
    digital = np.clip(np.round(data), -_PHYS_RANGE, _PHYS_RANGE).astype(np.int32)
    with atomic_path(path) as tmp:
        writer = pyedflib.EdfWriter(str(tmp), len(RELEASE_CHANNELS), file_type=pyedflib.FILETYPE_EDFPLUS)
        try:
            writer.setHeader(
                {
                    "technician": "",
                    "recording_additional": "",
                    "patientname": "X",
                    "patient_additional": "",
                    "patientcode": "",
                    "equipment": "BCI2000",
                    "admincode": "",
                    "sex": "",
                    "startdate": datetime(2009, 8, 12, 16, 15),
                    "birthdate": "",
                }
            )
            writer.setSignalHeaders(headers)
            for onset, duration, text in annotations:
                writer.writeAnnotation(onset, duration, text)
            # One block per 1-s data record: every channel's samples of that record, channel after channel.
            records = digital.reshape(len(RELEASE_CHANNELS), -1, sfreq).transpose(1, 0, 2)
            for record in records:
                if writer.blockWriteDigitalSamples(np.ascontiguousarray(record.ravel())) < 0:
                    raise OSError(f"{path}: pyEDFlib could not write a data record")
        finally:
            writer.close()
