"""BiomedCLIP teacher: a tiny folder in open_clip's local-dir format loads with the network made impossible."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch

from biokd.errors import WeightsError
from biokd.mri.biomedclip import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    BiomedClipTeacher,
    axial_slice_groups,
    bert_config_from_state,
    load_biomedclip,
    write_tiny_biomedclip,
)
from biokd.mri.oasis3 import data_spec
from biokd.profiling import count_parameters


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_biomedclip(tmp_path_factory.mktemp("clip") / "biomedclip-tiny", seed=0)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_folder_format(tiny_folder):
    names = {p.name for p in tiny_folder.iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", "bert"} <= names
    cfg = json.loads((tiny_folder / CONFIG_FILE).read_text())["model_cfg"]
    assert cfg["vision_cfg"]["timm_pool"] == "" and cfg["vision_cfg"]["timm_proj"] == "linear"
    assert cfg["text_cfg"]["hf_proj_type"] == "mlp"
    assert cfg["text_cfg"]["hf_pooler_type"] == "cls_last_hidden_state_pooler"


def test_teacher_loads_offline_with_the_saved_weights(tiny_folder, no_network):
    torch.manual_seed(0)
    teacher = BiomedClipTeacher.from_spec(data_spec(), weights=str(tiny_folder), n_groups=1, fused_dim=32, n_heads=4)
    saved = torch.load(tiny_folder / WEIGHTS_FILE, weights_only=True)
    key = "trunk.blocks.11.attn.qkv.weight"
    torch.testing.assert_close(teacher.vision.state_dict()[key], saved[f"visual.{key}"], rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.vision.parameters())  # frozen, no LoRA asked
    taps = {}
    teacher.embedding.register_forward_hook(lambda m, i, o: taps.__setitem__("embedding", o))
    mri, pet = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    out = teacher.eval()(mri, pet)
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    assert taps["embedding"].shape == (2, 32)
    # PET queries MRI: changing either input changes the logit
    assert not torch.allclose(teacher(mri, pet), teacher(torch.rand_like(mri), pet))
    assert not torch.allclose(teacher(mri, pet), teacher(mri, torch.rand_like(pet)))


def test_tokenizer_loads_offline(tiny_folder, no_network):
    from biokd.mri._torchvision_fix import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    tokens = open_clip.get_tokenizer(f"local-dir:{tiny_folder}")(["amyloid pet"])
    vocab = (tiny_folder / "bert" / "vocab.txt").read_text().split()
    assert tokens.shape == (1, 256)
    assert tokens[0, :4].tolist() == [vocab.index(t) for t in ("[CLS]", "amyloid", "pet", "[SEP]")]


def test_lora_on_later_blocks_only(tiny_folder, no_network):
    teacher = BiomedClipTeacher(str(tiny_folder), n_groups=1, fused_dim=32, lora_rank=4, lora_blocks=2)
    lora = [n for n, p in teacher.vision.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert {n.split(".")[2] for n in lora} == {"10", "11"}  # trunk.blocks.<i>: the last two of 12
    # rank 4 on qkv (192 → 576) and proj (192 → 192) of two blocks: 4·(192+576) + 4·(192+192) per block
    assert sum(teacher.vision.get_parameter(n).numel() for n in lora) == 2 * (4 * (192 + 576) + 4 * (192 + 192))
    out = teacher(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16))
    out.sum().backward()
    assert teacher.vision.get_parameter(lora[0]).grad is not None


def test_released_style_config_with_a_hub_text_name_loads_offline(tiny_folder, tmp_path, no_network):
    folder = tmp_path / "released-style"
    shutil.copytree(tiny_folder, folder)
    shutil.rmtree(folder / "bert")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    (folder / CONFIG_FILE).write_text(json.dumps(cfg))
    model, preprocess = load_biomedclip(folder)
    assert preprocess["interpolation"] == "bicubic"
    assert count_parameters(model) == count_parameters(load_biomedclip(tiny_folder)[0])
    bert = bert_config_from_state(torch.load(folder / WEIGHTS_FILE, weights_only=True))
    written = json.loads((tiny_folder / "bert" / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
        assert bert[key] == written[key]


def test_missing_weights_say_what_and_where(tmp_path):
    with pytest.raises(WeightsError, match=r"no such folder.*open_clip_config\.json.*BiomedCLIP-PubMedBERT_256"):
        BiomedClipTeacher(str(tmp_path / "absent"))
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(WeightsError, match=r"missing open_clip_pytorch_model\.bin\..*tokenizer\.json"):
        load_biomedclip(tmp_path)


def test_axial_slice_groups_pick_adjacent_central_slices():
    z = torch.arange(11, dtype=torch.float32)
    volume = z.view(1, 1, 1, 1, 11).expand(2, 1, 4, 5, 11)
    groups = axial_slice_groups(volume, n_groups=2)
    assert groups.shape == (2, 2, 3, 4, 5)
    # centres at 30% and 70% of z (3 and 7): slices 2,3,4 and 6,7,8
    assert groups[0, :, :, 0, 0].tolist() == [[2.0, 3.0, 4.0], [6.0, 7.0, 8.0]]


def test_open_clip_itself_reads_the_folder_like_biokd(tiny_folder, no_network):
    import open_clip

    reference, _ = open_clip.create_model_from_pretrained(f"local-dir:{tiny_folder}")
    ours, _ = load_biomedclip(tiny_folder)
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(images), reference.encode_image(images), rtol=0, atol=0)
        assert not torch.allclose(ours.encode_image(images), ours.encode_image(images.flip(-1)))


def test_smaller_input_resamples_the_released_position_embeddings(tiny_folder, no_network):
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    teacher = BiomedClipTeacher(vision_model="vit_tiny_patch16_224", embed_dim=64, n_groups=1, image_size=32)
    assert teacher.image_size == 32 and tuple(teacher.vision.trunk.patch_embed.grid_size) == (2, 2)
    teacher.load_pretrained(tiny_folder)
    saved = torch.load(tiny_folder / WEIGHTS_FILE, weights_only=True)
    released = saved["visual.trunk.pos_embed"]  # (1, 1 + 14 * 14, 192)
    ours = teacher.vision.trunk.pos_embed.detach()
    assert released.shape[1] == 197 and ours.shape[1] == 5
    torch.testing.assert_close(ours[:, 0], released[:, 0], rtol=0, atol=0)  # the class token's embedding is kept
    torch.testing.assert_close(ours, resample_abs_pos_embed(released, [2, 2], num_prefix_tokens=1))
    assert not torch.allclose(ours[:, 1:], released[:, 1:5])  # interpolated, not cut
    key = "trunk.blocks.11.attn.qkv.weight"
    torch.testing.assert_close(teacher.vision.state_dict()[key], saved[f"visual.{key}"], rtol=0, atol=0)
    volume = torch.rand(2, 1, 16, 20, 16)
    assert teacher(volume, volume).shape == (2, 1)
