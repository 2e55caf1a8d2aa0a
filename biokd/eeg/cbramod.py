"""CBraMod (Wang et al., ICLR 2025) as a biokd teacher, built on braindecode's ``CBraMod``.

Input: ``eeg`` ``(B, n_chans, n_times)`` sampled at 200 Hz, in CBraMod units (µV / 100; the dataset scales).
``n_times`` is a whole number of 1-s patches (200 samples). The pretraining reconstruction layer ``proj_out``
is replaced by ``nn.Identity`` as in the authors' fine-tuning, so the encoder's patch representations
``(B, C, S, 200)`` go straight to the head. Per-layer outputs are read by forward hooks on the module paths
returned by :meth:`CBraModTeacher.layer_names` (``backbone.encoder.layers.{i}``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import BiokdError, ConfigError, WeightsError
from ..models import constructor_kwargs
from ..weights import read_state_dict

log = logging.getLogger(__name__)

SFREQ = 200.0
PATCH_SIZE = 200
HEADS = ("linear", "all_patch_reps", "avgpool")
# Width of a patch after the first strided convolution of the patch embedding (200 samples -> 8).
_CONV_WIDTH = 8

WEIGHTS_HELP = (
    "CBraMod pretrained weights are either the authors' release `pretrained_weights.pth` (a plain state_dict "
    "of a bare CBraMod(): keys such as patch_embedding.proj_in.0.weight, "
    "encoder.layers.0.self_attn_s.in_proj_weight, proj_out.0.weight) from Hugging Face `weighting666/CBraMod`, "
    "or braindecode's release `braindecode/cbramod-pretrained` (a save_pretrained folder holding config.json "
    "and pytorch_model.bin or model.safetensors, or one of those files). Download one yourself and pass its "
    "local path; biokd downloads nothing."
)


class _MeanPoolHead(nn.Module):
    """Mean over channels and patches, then one linear layer (the authors' ``avgpooling_patch_reps``)."""

    def __init__(self, emb_dim: int, n_outputs: int):
        super().__init__()
        self.linear = nn.Linear(emb_dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(1, 2)))


def _all_patch_reps_head(n_chans: int, n_patches: int, emb_dim: int, n_outputs: int, drop: float) -> nn.Module:
    """The authors' default head: flatten all patch representations, then a 3-layer MLP."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_chans * n_patches * emb_dim, n_patches * emb_dim),
        nn.ELU(),
        nn.Dropout(drop),
        nn.Linear(n_patches * emb_dim, emb_dim),
        nn.ELU(),
        nn.Dropout(drop),
        nn.Linear(emb_dim, n_outputs),
    )


def _braindecode_cbramod() -> type[nn.Module]:
    """braindecode's CBraMod class; other models' import-time deprecation warnings are not ours to show."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        from braindecode.models import CBraMod
    return CBraMod


def eeg_sizes(spec: DataSpec) -> dict[str, Any]:
    """Sizes an EEG model takes from a data spec: channels, samples and rate of ``eeg``, and the outputs."""
    eeg = spec.input("eeg")
    return {
        "n_chans": eeg.size("channel"),
        "n_times": eeg.size("time"),
        "sfreq": eeg.sfreq,
        "n_outputs": spec.target.n_outputs,
    }


class CBraModTeacher(nn.Module):
    """braindecode's CBraMod without ``proj_out``, plus a head: ``linear``, ``all_patch_reps`` or ``avgpool``.

    ``emb_dim`` is the width of the patch representations (200 in the released model); it sets the
    patch-embedding convolutions (``emb_dim / 8`` channels, so a multiple of 40) and must be split evenly
    by ``nhead`` (half the heads attend across channels, half across patches). ``dim_feedforward`` defaults
    to ``4 * emb_dim`` (800).
    """

    input_keys = ("eeg",)

    def load_pretrained(self, path: str | Path, strict: bool = True) -> dict[str, object]:
        """Load CBraMod's released encoder weights (any of the formats :func:`load_pretrained` reads)."""
        return load_pretrained(self, path, strict)

    spec_sizes = staticmethod(eeg_sizes)

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        n_outputs: int,
        sfreq: float = SFREQ,
        head: str = "all_patch_reps",
        n_layer: int = 12,
        nhead: int = 8,
        emb_dim: int = 200,
        dim_feedforward: int | None = None,
        drop_prob: float = 0.1,
    ):
        super().__init__()
        dim_feedforward = 4 * emb_dim if dim_feedforward is None else dim_feedforward
        _check_config(n_chans, n_times, n_outputs, sfreq, head, n_layer, nhead, emb_dim, dim_feedforward)
        self.config = constructor_kwargs(locals())
        self.n_chans, self.n_times = int(n_chans), int(n_times)
        self.n_patches = self.n_times // PATCH_SIZE
        self.emb_dim = int(emb_dim)

        CBraMod = _braindecode_cbramod()
        conv_channels = emb_dim // _CONV_WIDTH
        norm = (5, conv_channels)
        self.backbone = CBraMod(
            n_outputs=n_outputs,
            n_chans=n_chans,
            n_times=n_times,
            sfreq=sfreq,
            patch_size=PATCH_SIZE,
            dim_feedforward=dim_feedforward,
            n_layer=n_layer,
            nhead=nhead,
            emb_dim=emb_dim,
            channels_kernel_stride_padding_norm=(
                (conv_channels, 49, 25, 24, norm),
                (conv_channels, 3, 1, 1, norm),
                (conv_channels, 3, 1, 1, norm),
            ),
            drop_prob=drop_prob,
            return_encoder_output=head != "linear",
        )
        self.backbone.proj_out = nn.Identity()
        if head == "linear":  # braindecode's Flatten + Linear(C·S·emb_dim, K), moved out of the backbone
            self.head = self.backbone.final_layer
            self.backbone.final_layer = nn.Identity()
        elif head == "all_patch_reps":
            self.head = _all_patch_reps_head(n_chans, self.n_patches, emb_dim, n_outputs, drop_prob)
        else:
            self.head = _MeanPoolHead(emb_dim, n_outputs)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        check_eeg_shape(eeg, self.n_chans, self.n_times, "CBraMod teacher")
        return self.head(self.backbone(eeg))

    def layer_names(self) -> list[str]:
        """Module paths of the encoder layers; a forward hook on each yields ``(B, C, S, emb_dim)``."""
        return [f"backbone.encoder.layers.{i}" for i in range(len(self.backbone.encoder.layers))]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the pretrained encoder (the frozen mask token is left out)."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]


def check_eeg_shape(eeg: torch.Tensor, n_chans: int, n_times: int, who: str, sfreq: float = SFREQ) -> None:
    """Raise a BiokdError unless ``eeg`` is ``(B, n_chans, n_times)``."""
    if eeg.ndim != 3 or eeg.shape[1] != n_chans or eeg.shape[2] != n_times:
        got = "(B, " + ", ".join(str(s) for s in eeg.shape[1:]) + ")" if eeg.ndim == 3 else tuple(eeg.shape)
        raise BiokdError(
            f"{who} expects (B, {n_chans}, {n_times}) at {sfreq:g} Hz; got {got}"
            + ("" if eeg.ndim == 3 else f" (a {eeg.ndim}-D tensor; expected batch, channels, samples)")
        )


def _check_config(n_chans, n_times, n_outputs, sfreq, head, n_layer, nhead, emb_dim, dim_feedforward) -> None:
    problems = []
    if float(sfreq) != SFREQ:
        problems.append(f"sfreq={sfreq}: CBraMod works on 200 Hz data, resample to 200 Hz")
    if n_times < PATCH_SIZE or n_times % PATCH_SIZE:
        problems.append(f"n_times={n_times} is not a positive multiple of 200 (1-s patches at 200 Hz)")
    if n_chans < 1 or n_outputs < 1 or n_layer < 1 or dim_feedforward < 1:
        problems.append(
            f"need n_chans, n_outputs, n_layer, dim_feedforward >= 1; got {n_chans}, "
            f"{n_outputs}, {n_layer}, {dim_feedforward}"
        )
    if head not in HEADS:
        problems.append(f"head={head!r}: choose one of {list(HEADS)}")
    if emb_dim < 40 or emb_dim % 40:
        problems.append(f"emb_dim={emb_dim} must be a multiple of 40 (200 in the released model)")
    elif nhead < 2 or nhead % 2 or (emb_dim // 2) % (nhead // 2):
        problems.append(f"nhead={nhead} must be even and nhead/2 must divide emb_dim/2={emb_dim // 2}")
    if problems:
        raise ConfigError("CBraModTeacher: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------
# Loading pretrained weights


_IGNORED = {
    "proj_out.": "the pretraining reconstruction layer proj_out, replaced by Identity",
    "final_layer.": "a braindecode classification head (the teacher builds its own)",
    "classifier.": "a fine-tuning head of the authors' code (the teacher builds its own)",
    "head.": "a biokd teacher head (the teacher builds its own)",
}
_LIST_AT_MOST = 25


def load_pretrained(teacher: CBraModTeacher, path: str | Path, strict: bool = True) -> dict[str, object]:
    """Load CBraMod encoder weights from a local file or folder into ``teacher.backbone``.

    Accepted: the authors' ``pretrained_weights.pth`` (state_dict of a bare ``CBraMod()``), a braindecode
    ``CBraMod`` state_dict (``final_layer.*`` allowed), a braindecode ``save_pretrained`` folder or its
    ``pytorch_model.bin`` / ``model.safetensors``; ``module.`` and ``backbone.`` prefixes are stripped.
    ``proj_out.*`` and head keys are ignored (logged). Missing or unexpected keys (when ``strict``) and any
    shape mismatch raise a WeightsError naming them. Returns what was loaded and ignored.
    """
    file, raw = read_state_dict(path, WEIGHTS_HELP)
    state = _unwrap_state_dict(raw, file)
    state, ignored = _map_keys(state)
    if ignored:
        groups = sorted({next(p for p in _IGNORED if _strip(k).startswith(p)) for k in ignored})
        log.info("%s: ignoring %d key(s): %s", file, len(ignored), "; ".join(f"{p}* ({_IGNORED[p]})" for p in groups))

    expected = teacher.backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {list(state[k].shape)}, model {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_names(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if problems:
        hint = _layer_hint(state, expected)
        raise WeightsError(f"{file}: does not fit CBraModTeacher {teacher.config}: " + "; ".join(problems) + hint)
    if missing or unexpected:
        log.warning("%s: loaded non-strictly; missing %s; unexpected %s", file, _names(missing), _names(unexpected))
    teacher.backbone.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    n_loaded = sum(k in expected for k in state)
    log.info("%s: loaded %d tensors into the CBraMod backbone", file, n_loaded)
    return {"file": str(file), "loaded": n_loaded, "ignored": ignored, "missing": missing, "unexpected": unexpected}


def _unwrap_state_dict(raw: object, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping) and not all(torch.is_tensor(v) for v in raw.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise WeightsError(f"{file}: expected a state_dict (name -> tensor), got {type(raw).__name__}")
    bad = [str(k) for k, v in raw.items() if not torch.is_tensor(v)]
    if bad:
        raise WeightsError(f"{file}: not a state_dict: non-tensor entries {_names(bad)}")
    return dict(raw)


def _strip(key: str) -> str:
    """A key without the wrappers' prefixes (``module.`` of DataParallel/DDP, ``backbone.`` of a teacher)."""
    return key.removeprefix("module.").removeprefix("backbone.")


def _map_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes; set aside ``proj_out``/head keys. Official and braindecode names agree."""
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        name = _strip(key)
        if name.startswith(tuple(_IGNORED)):  # the file's own key is reported; groups are found on ``name``
            ignored.append(key)
        else:
            mapped[name] = value
    return mapped, ignored


def _layer_hint(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    def layers(keys) -> int:
        found = {int(m.group(1)) for k in keys if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
        return max(found) + 1 if found else 0

    in_file, in_model = layers(state), layers(expected)
    if in_file and in_file != in_model:
        return f" (the file has {in_file} encoder layers, the model {in_model}: set n_layer={in_file})"
    return ""


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_AT_MOST])
    return shown + (f", ... and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else "")
