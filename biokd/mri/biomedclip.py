"""PET-guided BiomedCLIP teacher, built with open_clip from a local folder in open_clip's own format (offline).

The folder (``models/biomedclip.md``) holds ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` and the
tokenizer files, as released in ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``. Nothing is fetched:
the text tower's ``hf_model_name`` must name a local BERT config folder; when it names a hub id (as the
released config does), a BERT config is derived from the checkpoint's own tensor shapes instead. The weights
are read with ``torch.load(weights_only=True)``.

Teacher: ``n_groups`` groups of 3 adjacent axial slices of each volume (MRI and PET) become 3-channel images at
the vision tower's size, each encoded by the BiomedCLIP vision tower (optionally LoRA on its later blocks, via
peft); a cross-modal attention block lets PET tokens query MRI tokens; the pooled result is the ``embedding``
and a linear ``head`` gives the logit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._io import load_torch, save_torch, write_json
from ..errors import WeightsError
from ..models import constructor_kwargs
from ._torchvision_fix import ensure_torchvision_importable
from .student import n_outputs_of

ensure_torchvision_importable()  # before anything in this process imports open_clip, timm, transformers or peft

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
RELEASE = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
#: Parameter count of the released BiomedCLIP architecture (ViT-B/16 + PubMedBERT + projections), per stack.md.
RELEASED_PARAMETERS = 195_902_721
_TEXT_PREFIX = "text.transformer."


def _missing_message(folder: Path, missing: Sequence[str]) -> str:
    return (
        f"BiomedCLIP folder incomplete: missing {', '.join(missing)}. Expected open_clip's local-dir format: "
        f"{CONFIG_FILE}, {WEIGHTS_FILE} and the tokenizer files (tokenizer.json or vocab.txt), as in the "
        f"Hugging Face repository {RELEASE} (MIT licence). biokd never downloads them: fetch them yourself, e.g. "
        f"`huggingface-cli download {RELEASE} --local-dir {folder}`, and check them as models/biomedclip.md says"
    )


def check_folder(folder: str | Path) -> Path:
    """The folder, refused with the list of expected files when the config or the weights are missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: no such folder. " + _missing_message(folder, [CONFIG_FILE, WEIGHTS_FILE]))
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise WeightsError(f"{folder}: " + _missing_message(folder, missing))
    return folder


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = load_torch(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict of tensors; got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state.pop(_TEXT_PREFIX + "embeddings.position_ids", None)  # a buffer older transformers saved
    return state


def bert_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A BERT ``config.json`` matching the text tower's tensors (sizes read from their shapes).

    Heads are not visible in the shapes; BERT's 64-wide heads are assumed (they change no parameter shape).
    """
    try:
        vocab, hidden = state[_TEXT_PREFIX + "embeddings.word_embeddings.weight"].shape
        positions = state[_TEXT_PREFIX + "embeddings.position_embeddings.weight"].shape[0]
        types = state[_TEXT_PREFIX + "embeddings.token_type_embeddings.weight"].shape[0]
        inter = state[_TEXT_PREFIX + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise WeightsError(f"the checkpoint has no BERT text tower tensor {err}; not a BiomedCLIP checkpoint") from err
    layers = {
        int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(_TEXT_PREFIX)}encoder\.layer\.(\d+)\.", k))
    }
    return {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "num_attention_heads": max(1, int(hidden) // 64),
        "intermediate_size": int(inter),
        "max_position_embeddings": int(positions),
        "type_vocab_size": int(types),
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    }


def load_biomedclip(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The open_clip model of a local BiomedCLIP folder with its weights, and the folder's preprocess config."""
    folder = check_folder(folder)
    ensure_torchvision_importable()
    import open_clip

    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        text_cfg = config["model_cfg"]["text_cfg"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise WeightsError(f"{folder / CONFIG_FILE}: not an open_clip config with model_cfg.text_cfg ({err})") from err
    state = _state_dict(folder / WEIGHTS_FILE)
    with tempfile.TemporaryDirectory(prefix="biokd-biomedclip-") as tmp:
        bert = _local_bert_folder(folder, str(text_cfg.get("hf_model_name", "")))
        if bert is None:  # a hub id: describe the text tower from the checkpoint instead of fetching its config
            bert = Path(tmp) / "bert"
            write_json(bert / "config.json", bert_config_from_state(state))
        text_cfg["hf_model_name"] = str(bert)
        text_cfg["hf_tokenizer_name"] = str(bert)
        write_json(Path(tmp) / CONFIG_FILE, config)
        with _quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{tmp}", load_weights=False, pretrained_text=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{folder / WEIGHTS_FILE}: does not fit {folder / CONFIG_FILE}: {err}") from err
    return model.eval(), dict(config.get("preprocess_cfg", {}))


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's "no CLIP weights found" warnings: biokd loads the weights itself, right after."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _local_bert_folder(folder: Path, name: str) -> Path | None:
    """``hf_model_name`` as a local folder holding a BERT config.json (absolute, or relative to ``folder``)."""
    if not name:
        return None
    for candidate in (Path(name), folder / name, folder / Path(name).name):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    return None


# ---------------------------------------------------------------- tiny folder writer


def write_tiny_biomedclip(folder: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised small model of BiomedCLIP's architecture in the released folder format.

    Tiny ViT/16 (``vit_tiny_patch16_224``, linear projection, no pooling) + a 2-layer, 64-wide BERT with an MLP
    projection and CLS pooling, a WordPiece tokenizer (``tokenizer.json``) over a small vocabulary. NOT the
    released weights: for demos and tests of the loading path.
    """
    ensure_torchvision_importable()
    import open_clip
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    bert = folder / "bert"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [
        "amyloid",
        "pet",
        "mri",
        "brain",
        "scan",
        "positive",
        "negative",
        "t1",
        "weighted",
        "suvr",
        "centiloid",
        "cortex",
    ]
    vocab = [
        *specials,
        *words,
        *"abcdefghijklmnopqrstuvwxyz0123456789",
        *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"),
    ]
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    bert_cfg = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
    }
    write_json(bert / "config.json", bert_cfg)
    config = {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {
                "timm_model_name": "vit_tiny_patch16_224",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 224,
            },
            "text_cfg": {
                "hf_model_name": str(bert.resolve()),
                "hf_tokenizer_name": str(bert.resolve()),
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 256,
            },
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    write_json(folder / CONFIG_FILE, config)
    wordpiece = BertWordPieceTokenizer(str(bert / "vocab.txt"), lowercase=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=256,
    )
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    with _quiet_open_clip():
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False, pretrained_text=False)
    save_torch(folder / WEIGHTS_FILE, model.state_dict())
    return folder


# ---------------------------------------------------------------- teacher


def axial_slice_groups(volume: torch.Tensor, n_groups: int, span: tuple[float, float] = (0.3, 0.7)) -> torch.Tensor:
    """``(B, 1, X, Y, Z)`` → ``(B, n_groups, 3, X, Y)``: 3 adjacent axial slices per group, centres spread over
    ``span`` of the z axis (fractions; the brain's middle by default)."""
    depth = volume.shape[-1]
    centres = torch.linspace(span[0] * (depth - 1), span[1] * (depth - 1), n_groups).round().long()
    centres = centres.clamp(1, depth - 2)
    index = (centres[:, None] + torch.arange(-1, 2)[None, :]).reshape(-1)
    slices = volume[:, 0].index_select(-1, index.to(volume.device))  # (B, X, Y, 3·G)
    return slices.reshape(*slices.shape[:3], n_groups, 3).permute(0, 3, 4, 1, 2)


class CrossModalAttention(nn.Module):
    """PET tokens query MRI tokens (keys and values); residual and LayerNorm, then a feed-forward."""

    def __init__(self, dim: int, n_heads: int, drop_prob: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=drop_prob, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(drop_prob), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, pet: torch.Tensor, mri: torch.Tensor) -> torch.Tensor:
        fused = self.norm1(pet + self.attention(pet, mri, mri, need_weights=False)[0])
        return self.norm2(fused + self.ff(fused))


class BiomedClipTeacher(nn.Module):
    """PET-guided teacher on ``mri`` and ``pet`` ``(B, 1, X, Y, Z)`` (RAS) → logits ``(B, n_outputs)``."""

    input_keys = ("mri", "pet")

    def __init__(
        self,
        weights: str | None = None,
        n_outputs: int = 1,
        n_groups: int = 3,
        fused_dim: int = 128,
        n_heads: int = 4,
        lora_rank: int = 0,
        lora_alpha: int = 32,
        lora_blocks: int = 6,
        freeze_vision: bool = True,
        drop_prob: float = 0.1,
        vision_model: str = "vit_base_patch16_224",
        embed_dim: int = 512,
        image_size: int = 224,
    ):
        """``weights``: a local BiomedCLIP folder (the architecture and weights come from it); None: BiomedCLIP's
        vision tower (``vision_model``, ``embed_dim``, ``image_size``) randomly initialised, for
        :meth:`load_pretrained` (what ``teacher.weights`` of a run config calls) or for tests."""
        super().__init__()
        self.config = constructor_kwargs(locals())
        preprocess: dict[str, Any] = {}
        if weights is not None:
            clip, preprocess = load_biomedclip(weights)
            self.vision = clip.visual  # the text tower is not used by the teacher
            del clip
        else:
            from open_clip.timm_model import TimmModel

            self.vision = TimmModel(vision_model, embed_dim, image_size=image_size, pool="", proj="linear")
            if tuple(self.vision.trunk.patch_embed.img_size) != (image_size, image_size):
                # open_clip builds timm's model at its native size; timm resizes it (position embeddings resampled)
                self.vision.trunk.set_input_size(img_size=image_size)
        size = self.vision.image_size if hasattr(self.vision, "image_size") else image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        mean = preprocess.get("mean", [0.48145466, 0.4578275, 0.40821073])
        std = preprocess.get("std", [0.26862954, 0.26130258, 0.27577711])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.n_groups = n_groups
        self.freeze_vision = freeze_vision
        if freeze_vision:
            self.vision.requires_grad_(False)
        if lora_rank > 0:
            self._add_lora(lora_rank, lora_alpha, lora_blocks)
        embed = self._vision_dim()
        self.mri_proj = nn.Linear(embed, fused_dim)
        self.pet_proj = nn.Linear(embed, fused_dim)
        self.group_embed = nn.Parameter(torch.zeros(1, n_groups, fused_dim))
        self.cross_attention = CrossModalAttention(fused_dim, n_heads, drop_prob)
        self.embedding = nn.LayerNorm(fused_dim)
        self.head = nn.Sequential(nn.Dropout(drop_prob), nn.Linear(fused_dim, n_outputs))

    @classmethod
    def spec_sizes(cls, spec: Any) -> dict[str, Any]:
        """Outputs from the data spec: 1 for a binary target."""
        return {"n_outputs": n_outputs_of(spec)}

    def load_pretrained(self, path: str | Path) -> None:
        """The vision tower's weights from a local BiomedCLIP folder (open_clip ``local-dir:`` format), offline."""
        clip, _ = load_biomedclip(path)
        state = {k: v for k, v in clip.visual.state_dict().items() if "lora_" not in k}
        ours = {k.replace("base_layer.", ""): k for k in self.vision.state_dict() if "lora_" not in k}
        from timm.layers import resample_abs_pos_embed  # after load_biomedclip made torchvision importable

        own, trunk = self.vision.state_dict(), self.vision.trunk
        for key in [k for k in state if k.endswith("pos_embed") and state[k].shape != own[ours.get(k, k)].shape]:
            # the teacher runs at another input size than released: position embeddings resampled by timm
            grid = list(trunk.patch_embed.grid_size)
            state[key] = resample_abs_pos_embed(state[key], grid, num_prefix_tokens=trunk.num_prefix_tokens)
        try:
            mapped = {ours[k]: v for k, v in state.items()}
            missing = set(ours.values()) - set(mapped)
            if missing:
                raise KeyError(sorted(missing)[:3])
            self.vision.load_state_dict(mapped, strict=False)
        except (KeyError, RuntimeError) as err:
            raise WeightsError(
                f"{path}: its vision tower does not fit the teacher built with vision_model="
                f"{self.config['vision_model']!r}, embed_dim={self.config['embed_dim']}, image_size="
                f"{self.config['image_size']} ({err}); set these kwargs to the folder's {CONFIG_FILE} "
                "(model_cfg.vision_cfg, embed_dim)"
            ) from err
        if self.freeze_vision:
            self.vision.requires_grad_(False)
            for name, param in self.vision.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)

    @classmethod
    def from_spec(cls, spec: Any, **kwargs: Any) -> BiomedClipTeacher:
        kwargs.setdefault("n_outputs", n_outputs_of(spec))
        return cls(**kwargs)

    def _vision_dim(self) -> int:
        with torch.no_grad():
            return int(self.vision(torch.zeros(1, 3, self.image_size, self.image_size)).shape[-1])

    def _add_lora(self, rank: int, alpha: int, n_blocks: int) -> None:
        """LoRA (peft) on the attention projections of the last ``n_blocks`` ViT blocks."""
        from peft import LoraConfig, inject_adapter_in_model

        trunk = self.vision.trunk
        total = len(trunk.blocks)
        first = max(0, total - n_blocks)
        targets = [f"blocks.{i}.attn.{name}" for i in range(first, total) for name in ("qkv", "proj")]
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), trunk)
        for name, param in trunk.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` → ``(B, n_groups, vision_dim)``: slice groups through the vision tower."""
        groups = axial_slice_groups(volume, self.n_groups)  # (B, G, 3, X, Y)
        b = groups.shape[0]
        images = groups.reshape(b * self.n_groups, 3, *groups.shape[-2:])
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-6)  # each image to [0, 1], as an RGB picture
        images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.vision((images - self.mean) / self.std).reshape(b, self.n_groups, -1)

    def forward(self, mri: torch.Tensor, pet: torch.Tensor) -> torch.Tensor:
        mri_tokens = self.mri_proj(self.encode(mri)) + self.group_embed
        pet_tokens = self.pet_proj(self.encode(pet)) + self.group_embed
        fused = self.cross_attention(pet_tokens, mri_tokens)
        return self.head(self.embedding(fused.mean(dim=1)))
