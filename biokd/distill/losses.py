"""Distillation losses as pure tensor functions (the term classes wire them to taps by name).

Every function takes student and teacher tensors and returns a scalar; shapes are named in each docstring.
Sizes that cannot work (a band no frequency bin reaches, channel counts that differ) raise
:class:`~biokd.errors.ConfigError`; the ``check_*`` helpers run the same checks at set-up time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: Canonical EEG bands in Hz, half-open ``[low, high)``.
EEG_BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 100.0),
}


def _floating(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32, or as is when already float64 (so gradient checks can run in double)."""
    return x if x.dtype == torch.float64 else x.float()


def _same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ConfigError(
            f"{what}: student shape {tuple(student.shape)} differs from teacher shape {tuple(teacher.shape)}"
        )


# -- logits ------------------------------------------------------------------------------------------


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def binary_kd(student_logit: torch.Tensor, teacher_logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KD for a one-logit (binary) output: ``T² · KL(Bern(σ(t/T)) ‖ Bern(σ(s/T)))``, averaged over the batch.

    Takes ``(B,)`` or ``(B, 1)`` logits. Equals :func:`kd_kl` on the two-class logits ``[0, z]``. The BCE form
    ``BCE(s/T, σ(t/T))·T²`` differs from it only by the teacher's entropy, a constant for the student.
    """
    _same_shape(student_logit, teacher_logit, "binary_kd")
    if student_logit.dim() == 2 and student_logit.shape[1] != 1:
        raise ConfigError(f"binary_kd takes one logit per input; got shape {tuple(student_logit.shape)}")
    s, t = _floating(student_logit).reshape(-1) / temperature, _floating(teacher_logit).reshape(-1) / temperature
    p_t = torch.sigmoid(t)
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean() * temperature * temperature


def output_match(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Regression KD: MSE between student outputs and teacher outputs divided by ``temperature``.

    ``temperature=1`` matches the teacher as is; larger values soften its targets as GlucoNet does.
    """
    return F.mse_loss(student, teacher / temperature)


# -- embeddings --------------------------------------------------------------------------------------


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def feature_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` along the last (feature) axis, averaged over all other axes."""
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)).mean()


#: ``1 − cos`` along the last axis (the cross-modal alignment name of :func:`feature_cosine`).
cosine = feature_cosine


def normalized_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE (mean over elements) of embeddings L2-normalised along the last axis: ``(2 − 2·cos) / D`` on average."""
    _same_shape(student, teacher, "normalized_mse")
    return F.mse_loss(F.normalize(student, dim=-1, eps=1e-8), F.normalize(teacher, dim=-1, eps=1e-8))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al., 2019) between representations ``(n, ...)`` of the same ``n`` inputs.

    ``‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)`` on column-centred ``X`` and ``Y`` (trailing axes flattened), computed
    through the ``n × n`` Gram matrices in float64. In [0, 1]; widths may differ; invariant to orthogonal
    transforms and isotropic scaling of either side. Use ``1 − linear_cka`` (:func:`cka_loss`) as a loss.
    """
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"linear CKA needs the same inputs on both sides; got {x.shape[0]} and {y.shape[0]} rows")
    if x.shape[0] < 2:
        raise ConfigError("linear CKA needs at least 2 inputs in a batch (set drop_last for the loader)")
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    k, m = x @ x.T, y @ y.T  # tr(K M) = ‖Yᵀ X‖²_F, ‖K‖_F = ‖Xᵀ X‖_F
    hsic = (k * m).sum()
    norm = (k.norm() * m.norm()).clamp_min(1e-30)
    return hsic / norm


def cka_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 − linear CKA`` between student and teacher representations ``(B, ...)``; no projection needed."""
    return (1.0 - linear_cka(student, teacher)).to(_floating(student).dtype)


def info_nce(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.1, symmetric: bool = True
) -> torch.Tensor:
    """Contrastive alignment of ``(B, D)`` embeddings: input ``i``'s student matches input ``i``'s teacher.

    Logits are ``cos(s_i, t_j) / temperature``. Student → teacher: cross-entropy of each row against its
    own index (the other inputs of the batch are the negatives). ``symmetric`` averages it with the
    teacher → student direction (cross-entropy over columns), as CLIP does.
    """
    _same_shape(student, teacher, "info_nce (project to a shared width first)")
    if temperature <= 0:
        raise ConfigError(f"info_nce temperature must be > 0; got {temperature}")
    s = F.normalize(_floating(student).reshape(student.shape[0], -1), dim=-1, eps=1e-8)
    t = F.normalize(_floating(teacher).reshape(teacher.shape[0], -1), dim=-1, eps=1e-8).to(s.dtype)
    logits = s @ t.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, target)
    return 0.5 * (loss + F.cross_entropy(logits.T, target)) if symmetric else loss


def _pair_distances(x: torch.Tensor) -> torch.Tensor:
    """Distances of the ``n(n−1)/2`` pairs ``i < j`` of rows of ``x`` (smooth at zero distance)."""
    x = _floating(x).reshape(x.shape[0], -1)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    return ((x[i] - x[j]).pow(2).sum(-1) + 1e-12).sqrt()


def relational_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance term (Park et al., 2019): smooth L1 between the pairwise distances of the batch's
    embeddings ``(B, ...)``, each side divided by its mean pair distance. Widths may differ."""
    if student.shape[0] != teacher.shape[0] or student.shape[0] < 2:
        raise ConfigError(
            f"relational_distance needs the same batch (>= 2 inputs) on both sides; "
            f"got {student.shape[0]} and {teacher.shape[0]}"
        )
    d_s, d_t = _pair_distances(student), _pair_distances(teacher)
    d_s = d_s / d_s.mean().clamp_min(1e-12)
    d_t = d_t / d_t.mean().clamp_min(1e-12)
    return F.smooth_l1_loss(d_s, d_t.to(d_s.dtype))


def similarity_structure(student_nodes: torch.Tensor, teacher_nodes: torch.Tensor) -> torch.Tensor:
    """MSE between the ROI × ROI cosine-similarity matrices of node embeddings ``(B, R, D_s)`` and ``(B, R, D_t)``.

    Off-diagonal entries only (the diagonal is 1 on both sides); widths may differ, ROI counts may not.
    """
    if student_nodes.dim() != 3 or teacher_nodes.dim() != 3:
        raise ConfigError(
            f"similarity_structure takes node embeddings (B, R, D); got {tuple(student_nodes.shape)} and "
            f"{tuple(teacher_nodes.shape)}"
        )
    if student_nodes.shape[:2] != teacher_nodes.shape[:2]:
        raise ConfigError(
            f"similarity_structure: student has {student_nodes.shape[1]} nodes (batch {student_nodes.shape[0]}), "
            f"teacher {teacher_nodes.shape[1]} (batch {teacher_nodes.shape[0]}); node counts must agree"
        )
    s = F.normalize(_floating(student_nodes), dim=-1, eps=1e-8)
    t = F.normalize(_floating(teacher_nodes), dim=-1, eps=1e-8).to(s.dtype)
    off = ~torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    return F.mse_loss((s @ s.transpose(1, 2))[:, off], (t @ t.transpose(1, 2))[:, off])


# -- spectra in hertz --------------------------------------------------------------------------------


def _band_range(name: str) -> tuple[float, float]:
    if name not in EEG_BANDS:
        known = ", ".join(f"{k} {lo:g}-{hi:g} Hz" for k, (lo, hi) in EEG_BANDS.items())
        raise ConfigError(f"unknown EEG band {name!r}; known bands: {known}")
    return EEG_BANDS[name]


def _bins_in(freqs: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (freqs >= lo) & (freqs < hi)


def check_bands(n_times: int, sfreq: float, bands: dict[str, float] | None) -> dict[str, int]:
    """Check that every named band holds at least one rFFT bin of ``n_times`` samples at ``sfreq`` Hz.

    Returns the number of bins in each band. Raises ConfigError for an unknown band, a negative weight,
    or a band no bin reaches (above Nyquist, or between two bins), naming the band, its range, ``sfreq``,
    ``n_times`` and the bin spacing.
    """
    try:
        sfreq = float(sfreq)
    except (TypeError, ValueError):
        raise ConfigError(f"sfreq must be a positive number of Hz; got {sfreq!r}") from None
    if not (math.isfinite(sfreq) and sfreq > 0):
        raise ConfigError(f"sfreq must be a positive number of Hz; got {sfreq!r}")
    if n_times < 2:
        raise ConfigError(f"a spectrum needs at least 2 time samples; got n_times={n_times}")
    freqs = torch.fft.rfftfreq(n_times, d=1.0 / sfreq, dtype=torch.float64)
    spacing, nyquist = sfreq / n_times, float(freqs[-1])
    counts: dict[str, int] = {}
    for name, weight in (bands or {}).items():
        lo, hi = _band_range(name)
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"band {name!r}: weight must be a number >= 0; got {weight!r}")
        n = int(_bins_in(freqs, lo, hi).sum())
        if n == 0:
            where = "above the highest bin" if lo > nyquist else "between two bins"
            raise ConfigError(
                f"band {name!r} ({lo:g}-{hi:g} Hz) holds no frequency bin: {n_times} samples at sfreq {sfreq:g} Hz "
                f"give bins every {spacing:.4g} Hz up to {nyquist:.4g} Hz (Nyquist {sfreq / 2:g} Hz); the band lies "
                f"{where}. Use a longer window, a higher sampling rate, or drop the band"
            )
        counts[name] = n
    return counts


def band_weights(n_times: int, sfreq: float, bands: dict[str, float], device=None) -> torch.Tensor:
    """Weight of each rFFT bin: the weight of the EEG band holding its frequency (0 outside all named bands).

    Bands are validated first (:func:`check_bands`).
    """
    check_bands(n_times, sfreq, bands)
    freqs = torch.fft.rfftfreq(n_times, d=1.0 / sfreq, device=device)
    w = torch.zeros_like(freqs)
    for name, weight in bands.items():
        w[_bins_in(freqs, *EEG_BANDS[name])] = float(weight)
    return w


def spectral_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    sfreq: float,
    dim: int = -1,
    bands: dict[str, float] | None = None,
    magnitude: float = 1.0,
    phase: float = 1.0,
    phase_floor: float = 0.1,
) -> torch.Tensor:
    """Align the magnitude and phase spectra of two signal-rate sequences along ``dim`` (time, ``sfreq`` Hz).

    Spectra are ``rfft(·, norm="ortho")``; bin ``k`` has weight ``w_k`` (1 for every bin when ``bands`` is
    None; else the weight of its EEG band, 0 outside all named bands; bands are checked by :func:`check_bands`).
    Weights multiply per-bin terms and are not renormalised, so a band changes the loss only through its bins.

    - Magnitude: ``mean_k w_k (log1p|S_k| − log1p|T_k|)²`` (averaged over bins and all other axes).
    - Phase: per sequence, ``Σ_k w_k |T_k| φ_k / Σ_k |T_k|``, the teacher's normalised magnitude weighting
      a bounded per-bin term ``φ_k = ½ |ŝ_k − t̂_k|²`` between softened unit phasors ``ẑ = z / √(|z|² + δ²)``,
      with ``δ = phase_floor · mean_k |T_k|`` (the teacher's mean magnitude in that sequence). ``φ_k`` lies
      in [0, 2] and equals ``1 − cos Δφ_k`` where both magnitudes are ≫ δ; its gradient wrt the student bin is
      at most ``2/δ`` however small ``|S_k|`` is (``1 − cos Δφ`` on exact unit phasors grows as ``1/|S_k|``).
      Hence the phase part is at most ``2·phase·max w`` and its gradient wrt the student signal has norm at most
      ``2·phase·max w / (δ_min · n_seq)`` (``n_seq`` sequences, ``δ_min`` their smallest δ).

    Zero for identical inputs; a circular shift keeps the magnitude part at zero and raises the phase part.
    """
    _same_shape(student, teacher, "spectral_loss")
    n_times = student.shape[dim]
    s = torch.fft.rfft(_floating(student), dim=dim, norm="ortho").movedim(dim, -1)
    t = torch.fft.rfft(_floating(teacher), dim=dim, norm="ortho").movedim(dim, -1).to(s.dtype)
    if bands is None:
        check_bands(n_times, sfreq, None)
        w = torch.ones(s.shape[-1], dtype=s.real.dtype, device=s.device)
    else:
        w = band_weights(n_times, sfreq, bands, device=s.device).to(s.real.dtype)
    mag_s, mag_t = s.abs(), t.abs()
    loss = s.real.new_zeros(())
    if magnitude:
        loss = loss + magnitude * (w * (torch.log1p(mag_s) - torch.log1p(mag_t)) ** 2).mean()
    if phase:
        mean_t = mag_t.mean(dim=-1, keepdim=True)
        delta2 = (phase_floor * mean_t).pow(2).clamp_min(1e-24)
        unit_s = s / (s.real.pow(2) + s.imag.pow(2) + delta2).sqrt()
        unit_t = t / (t.real.pow(2) + t.imag.pow(2) + delta2).sqrt()
        gap = unit_s - unit_t
        per_bin = 0.5 * (gap.real.pow(2) + gap.imag.pow(2))
        per_seq = (w * mag_t * per_bin).sum(-1) / mag_t.sum(-1).clamp_min(1e-12)
        loss = loss + phase * per_seq.mean()
    return loss


def fit_linear_decoder(tokens: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> torch.nn.Linear:
    """A ``Linear(D, P)`` fitted by ridge least squares to map tokens ``(..., D)`` onto targets ``(..., P)``.

    Solved in float64 on centred data (intercept as the bias); ``ridge`` is relative to the mean eigenvalue of
    the token covariance, so the fit is defined when there are fewer tokens than features.
    """
    x = tokens.detach().reshape(-1, tokens.shape[-1]).double()
    y = targets.detach().reshape(-1, targets.shape[-1]).double().to(x.device)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"decoder fit: {x.shape[0]} tokens but {y.shape[0]} target rows")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-12))
    weight = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device), xc.T @ yc)
    layer = torch.nn.Linear(x.shape[1], y.shape[1], device=tokens.device)
    with torch.no_grad():
        layer.weight.copy_(weight.T.float())
        layer.bias.copy_((my - mx @ weight).float())
    return layer


# -- channel connectivity ----------------------------------------------------------------------------


def check_channels(n_student: int, n_teacher: int, what: str = "connectivity") -> None:
    """Channel-by-channel terms compare the same channels: raise ConfigError naming both counts otherwise."""
    if n_student != n_teacher:
        raise ConfigError(
            f"{what}: the student has {n_student} channels and the teacher {n_teacher}; channel × channel "
            f"matrices compare the same electrodes, so the counts must agree"
        )


def _reference(x: torch.Tensor, reference: str) -> torch.Tensor:
    if reference == "average":
        if x.shape[1] < 3:
            raise ConfigError(f"average reference needs at least 3 channels; got {x.shape[1]} (use reference='none')")
        return x - x.mean(dim=1, keepdim=True)
    if reference == "none":
        return x
    raise ConfigError(f"reference must be 'average' or 'none'; got {reference!r}")


def _welch_coherence(
    x: torch.Tensor, sfreq: float, band: str | tuple[float, float], nperseg: int | None
) -> torch.Tensor:
    # scipy.signal.coherence is not differentiable: Welch's estimate (Hann window, half overlap, segment mean
    # removed, as scipy's defaults) written in torch; the tests check it against scipy.
    n_times = x.shape[-1]
    nperseg = nperseg or max(n_times // 4, 2)
    if not 2 <= nperseg <= n_times // 2:
        raise ConfigError(f"coherence needs 2 <= nperseg <= n_times/2 (two segments at least); got {nperseg}")
    lo, hi = _band_range(band) if isinstance(band, str) else (float(band[0]), float(band[1]))
    freqs = torch.fft.rfftfreq(nperseg, d=1.0 / sfreq, dtype=torch.float64)
    keep = _bins_in(freqs, lo, hi)
    if not keep.any():
        raise ConfigError(
            f"coherence band {band!r} ({lo:g}-{hi:g} Hz) holds no bin: segments of {nperseg} samples at sfreq "
            f"{sfreq:g} Hz give bins every {sfreq / nperseg:.4g} Hz up to {float(freqs[-1]):.4g} Hz"
        )
    segments = x.unfold(-1, nperseg, nperseg // 2)  # (B, C, n_seg, nperseg)
    segments = segments - segments.mean(dim=-1, keepdim=True)
    window = torch.hann_window(nperseg, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.fft.rfft(segments * window, dim=-1)[..., keep.to(x.device)]  # (B, C, n_seg, F)
    cross = torch.einsum("bisf,bjsf->bijf", spec, spec.conj()) / spec.shape[2]
    power = cross.diagonal(dim1=1, dim2=2).real  # (B, F, C)
    denom = (power.transpose(1, 2)[:, :, None, :] * power.transpose(1, 2)[:, None, :, :]).clamp_min(1e-30)
    return (cross.abs().pow(2) / denom).mean(dim=-1)


def channel_connectivity(
    x: torch.Tensor,
    *,
    kind: str = "correlation",
    sfreq: float | None = None,
    band: str | tuple[float, float] | None = None,
    reference: str = "average",
    nperseg: int | None = None,
) -> torch.Tensor:
    """Per-sample channel × channel connectivity ``(B, C, C)`` of signal-rate activity ``(B, C, T)``.

    ``reference="average"`` first removes the mean over channels at each time point (features centred
    across channels), so a profile shared by all channels cannot make every pair look connected.

    - ``correlation``: Pearson correlation over time (trailing axes after the channel axis are flattened).
    - ``coherence``: magnitude-squared coherence (Welch: Hann segments of ``nperseg`` samples, default T/4,
      half overlap) averaged over the bins of ``band`` (an EEG band name or ``(low, high)`` Hz); needs ``sfreq``.
    """
    if x.dim() < 3:
        raise ConfigError(f"channel connectivity takes (B, C, T); got shape {tuple(x.shape)}")
    x = _reference(_floating(x), reference)
    if kind == "correlation":
        flat = x.flatten(2)
        flat = flat - flat.mean(dim=-1, keepdim=True)
        flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return flat @ flat.transpose(1, 2)
    if kind == "coherence":
        if sfreq is None or band is None or x.dim() != 3:
            raise ConfigError(f"coherence needs (B, C, T) input, `sfreq` and `band`; got shape {tuple(x.shape)}")
        return _welch_coherence(x, float(sfreq), band, nperseg)
    raise ConfigError(f"connectivity kind must be 'correlation' or 'coherence'; got {kind!r}")


def channel_correlation(x: torch.Tensor) -> torch.Tensor:
    """Channel × channel Pearson correlation after the average reference (see :func:`channel_connectivity`)."""
    return channel_connectivity(x, kind="correlation")


def connectivity_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    kind: str = "correlation",
    sfreq: float | None = None,
    band: str | tuple[float, float] | None = None,
    reference: str = "average",
    nperseg: int | None = None,
) -> torch.Tensor:
    """MSE between the off-diagonal entries of student and teacher channel connectivity (``(B, C, T)`` each).

    Needs no projection: the matrices are C × C whatever the widths; channel counts must agree.
    """
    if student.dim() < 2 or teacher.dim() < 2:
        raise ConfigError(f"connectivity takes (B, C, T); got {tuple(student.shape)} and {tuple(teacher.shape)}")
    check_channels(student.shape[1], teacher.shape[1])
    opts = dict(kind=kind, sfreq=sfreq, band=band, reference=reference, nperseg=nperseg)
    c_s = channel_connectivity(student, **opts)
    c_t = channel_connectivity(teacher, **opts).to(c_s.dtype)
    off = ~torch.eye(c_s.shape[1], dtype=torch.bool, device=c_s.device)
    return F.mse_loss(c_s[:, off], c_t[:, off])
