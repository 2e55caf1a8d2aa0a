"""CBraMod teacher: construction, heads, layer taps, input checks, loading the authors' and braindecode's weights."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import torch
from torch import nn

from biokd.eeg.cbramod import CBraModTeacher, load_pretrained
from biokd.errors import BiokdError, ConfigError, WeightsError
from biokd.profiling import count_parameters

TINY = {"n_chans": 4, "n_times": 400, "n_outputs": 3, "head": "linear", "n_layer": 2, "nhead": 4, "emb_dim": 40}


class NotATensor:
    """A custom class: its pickled instance must be refused by weights-only loading."""

    def __init__(self):
        self.payload = "anything"


def authors_release_state_dict(n_layer: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict with the key names and shapes of the authors' `pretrained_weights.pth` (eeg.md §1.2)."""
    shapes = {
        "patch_embedding.mask_encoding": [200],
        "patch_embedding.positional_encoding.0.weight": [200, 1, 19, 7],
        "patch_embedding.positional_encoding.0.bias": [200],
        "patch_embedding.proj_in.0.weight": [25, 1, 1, 49],
        "patch_embedding.proj_in.0.bias": [25],
    }
    for i in (3, 6):
        shapes[f"patch_embedding.proj_in.{i}.weight"] = [25, 25, 1, 3]
        shapes[f"patch_embedding.proj_in.{i}.bias"] = [25]
    for i in (1, 4, 7):
        shapes[f"patch_embedding.proj_in.{i}.weight"] = [25]
        shapes[f"patch_embedding.proj_in.{i}.bias"] = [25]
    shapes["patch_embedding.spectral_proj.0.weight"] = [200, 101]
    shapes["patch_embedding.spectral_proj.0.bias"] = [200]
    for layer in range(n_layer):
        p = f"encoder.layers.{layer}."
        for attn in ("self_attn_s", "self_attn_t"):
            shapes[p + attn + ".in_proj_weight"] = [300, 100]
            shapes[p + attn + ".in_proj_bias"] = [300]
            shapes[p + attn + ".out_proj.weight"] = [100, 100]
            shapes[p + attn + ".out_proj.bias"] = [100]
        shapes[p + "linear1.weight"], shapes[p + "linear1.bias"] = [800, 200], [800]
        shapes[p + "linear2.weight"], shapes[p + "linear2.bias"] = [200, 800], [200]
        for norm in ("norm1", "norm2"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = [200], [200]
    shapes["proj_out.0.weight"], shapes["proj_out.0.bias"] = [200, 200], [200]
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[dict[str, torch.Tensor], object]:
    state = authors_release_state_dict()
    path = tmp_path_factory.mktemp("cbramod") / "pretrained_weights.pth"
    torch.save(state, path)
    return state, path


def test_authors_key_table_matches_the_teacher_backbone(release):
    state, _ = release
    assert len(state) == 211  # 17 patch-embedding + 12 × 16 encoder + 2 proj_out tensors
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear")
    expected = {k: list(v.shape) for k, v in teacher.backbone.state_dict().items()}
    from_file = {k: list(v.shape) for k, v in state.items() if not k.startswith("proj_out.")}
    assert expected == from_file


def test_authors_release_loads_strictly_and_copies_every_tensor(release, caplog):
    state, path = release
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear")
    head_before = teacher.head[1].weight.clone()
    with caplog.at_level(logging.INFO, logger="biokd.eeg.cbramod"):
        report = load_pretrained(teacher, path)
    assert report["loaded"] == 209 and report["ignored"] == ["proj_out.0.weight", "proj_out.0.bias"]
    loaded = teacher.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("proj_out."):
            assert torch.equal(loaded[key], value), key
    assert torch.equal(teacher.head[1].weight, head_before)  # the head is not touched
    assert "proj_out" in caplog.text and "replaced by Identity" in caplog.text
    assert isinstance(teacher.backbone.proj_out, nn.Identity)


def test_wrong_keys_are_named(release, tmp_path):
    state, _ = release
    bad = dict(state)
    bad["encoder.layers.3.linear_1.weight"] = bad.pop("encoder.layers.3.linear1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(bad, path)
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear")
    with pytest.raises(WeightsError) as err:
        load_pretrained(teacher, path)
    msg = str(err.value)
    assert "1 missing key(s): encoder.layers.3.linear1.weight" in msg
    assert "1 unexpected key(s): encoder.layers.3.linear_1.weight" in msg
    assert str(path) in msg

    report = load_pretrained(teacher, path, strict=False)
    assert report["missing"] == ["encoder.layers.3.linear1.weight"]
    assert torch.equal(teacher.backbone.encoder.layers[3].linear2.weight, state["encoder.layers.3.linear2.weight"])


def test_wrong_layer_count_gives_a_hint(release):
    _, path = release
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear", n_layer=11)
    with pytest.raises(WeightsError, match=r"unexpected key\(s\): encoder\.layers\.11\.self_attn_s") as err:
        load_pretrained(teacher, path)
    assert "set n_layer=12" in str(err.value)


def test_wrong_shapes_name_the_key_and_both_shapes(release):
    _, path = release
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear", dim_feedforward=400)
    with pytest.raises(WeightsError) as err:
        load_pretrained(teacher, path, strict=False)  # shapes are checked even when not strict
    msg = str(err.value)
    assert "36 shape mismatch(es)" in msg  # linear1 weight and bias, linear2 weight, × 12
    assert "encoder.layers.0.linear1.weight: file [800, 200], model [400, 200]" in msg
    assert "encoder.layers.0.linear2.weight: file [200, 800], model [200, 400]" in msg


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"encoder.layers.0.linear1.weight": torch.zeros(2), "extra": NotATensor()}, path)
    with pytest.raises(WeightsError, match="refused by weights-only loading"):
        load_pretrained(CBraModTeacher(**TINY), path)


def test_missing_file_says_what_to_get(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_pretrained(CBraModTeacher(**TINY), tmp_path / "pretrained_weights.pth")
    msg = str(err.value)
    for part in (
        "no such file",
        "pretrained_weights.pth",
        "weighting666/CBraMod",
        "braindecode/cbramod-pretrained",
        "proj_out.0.weight",
        "downloads nothing",
    ):
        assert part in msg
    with pytest.raises(WeightsError, match=r"neither pytorch_model\.bin nor model\.safetensors"):
        load_pretrained(CBraModTeacher(**TINY), tmp_path)


def _tiny_braindecode(n_outputs: int = 5) -> nn.Module:
    from braindecode.models import CBraMod

    norm = (5, 5)
    return CBraMod(
        n_outputs=n_outputs,
        n_chans=4,
        n_times=400,
        sfreq=200,
        n_layer=2,
        nhead=4,
        emb_dim=40,
        dim_feedforward=160,
        channels_kernel_stride_padding_norm=((5, 49, 25, 24, norm), (5, 3, 1, 1, norm), (5, 3, 1, 1, norm)),
    )


def _write_safetensors(path, state: dict[str, torch.Tensor]) -> None:
    """Write the safetensors layout by hand: u64 header size, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, tensor in state.items():
        data = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.mark.filterwarnings("ignore:Could not save model in safetensors format")
def test_braindecode_formats_load_and_match_braindecode_forward(tmp_path):
    torch.manual_seed(1)
    source = _tiny_braindecode().eval()
    state = source.state_dict()
    assert any(k.startswith("final_layer.") for k in state)
    source.save_pretrained(tmp_path / "folder")  # braindecode's own on-disk layout
    assert (tmp_path / "folder" / "pytorch_model.bin").is_file()
    torch.save(state, tmp_path / "braindecode.pt")
    _write_safetensors(tmp_path / "model.safetensors", state)

    source.proj_out = nn.Identity()
    x = torch.randn(2, 4, 400)
    with torch.no_grad():
        want = source(x, return_features=True)["features"]
    for path in (tmp_path / "folder", tmp_path / "braindecode.pt", tmp_path / "model.safetensors"):
        teacher = CBraModTeacher(**TINY, drop_prob=0.0).eval()
        report = load_pretrained(teacher, path)
        assert set(report["ignored"]) == {k for k in state if k.startswith(("proj_out.", "final_layer."))}
        with torch.no_grad():
            assert torch.allclose(teacher.backbone(x), want, atol=1e-6), path


def test_damaged_safetensors_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_pretrained(CBraModTeacher(**TINY), path)


def test_input_shape_is_checked():
    teacher = CBraModTeacher(**{**TINY, "n_chans": 64, "n_times": 800})
    with pytest.raises(BiokdError) as err:
        teacher(torch.zeros(2, 32, 2000))
    assert str(err.value) == "CBraMod teacher expects (B, 64, 800) at 200 Hz; got (B, 32, 2000)"
    with pytest.raises(BiokdError, match=r"got \(64, 800\) \(a 2-D tensor"):
        teacher(torch.zeros(64, 800))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_times": 450}, "n_times=450 is not a positive multiple of 200"),
        ({"sfreq": 250}, "resample to 200 Hz"),
        ({"head": "mlp"}, "choose one of"),
        ({"emb_dim": 100}, "multiple of 40"),
        ({"nhead": 3}, "must be even"),
    ],
)
def test_bad_config_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        CBraModTeacher(**{**TINY, **change})


def test_tiny_teacher_heads_taps_config_and_parameter_groups():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 400)
    for head, head_params in (
        ("linear", 4 * 2 * 40 * 3 + 3),
        ("avgpool", 40 * 3 + 3),
        ("all_patch_reps", (320 * 80 + 80) + (80 * 40 + 40) + (40 * 3 + 3)),
    ):
        teacher = CBraModTeacher(**{**TINY, "head": head}).eval()
        assert count_parameters(teacher.head) == head_params
        assert teacher(x).shape == (2, 3)
        rebuilt = CBraModTeacher(**json.loads(json.dumps(teacher.config)))
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in teacher.state_dict().items()
        }

    names = teacher.layer_names()
    assert names == ["backbone.encoder.layers.0", "backbone.encoder.layers.1"]
    seen = {}
    hooks = [
        teacher.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.shape)) for n in names
    ]
    teacher(x)
    for h in hooks:
        h.remove()
    assert seen == {n: (2, 4, 2, 40) for n in names}

    groups = teacher.backbone_parameters() + teacher.head_parameters()
    assert len(groups) == len({id(p) for p in groups}) == sum(p.requires_grad for p in teacher.parameters())
    assert all(p is not teacher.backbone.patch_embedding.mask_encoding for p in groups)


def test_full_size_teacher_at_physionet_mi_size():
    torch.manual_seed(0)
    x = torch.randn(1, 64, 800)
    for head, head_params in (("all_patch_reps", 41_121_804), ("linear", 64 * 4 * 200 * 4 + 4)):
        teacher = CBraModTeacher(n_chans=64, n_times=800, n_outputs=4, head=head).eval()
        assert count_parameters(teacher.backbone) == 4_883_800  # eeg.md §1.3, without proj_out
        assert count_parameters(teacher.head) == head_params
        tap = teacher.get_submodule(teacher.layer_names()[-1])
        shapes: list[torch.Size] = []
        hook = tap.register_forward_hook(lambda m, i, o, seen=shapes: seen.append(o.shape))
        with torch.no_grad():
            out = teacher(x)
        hook.remove()
        assert len(teacher.layer_names()) == 12 and shapes == [(1, 64, 4, 200)]
        assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_full_size_faced_head_matches_published_count():
    with torch.device("meta"):  # 128 M parameters: count them without allocating
        teacher = CBraModTeacher(n_chans=32, n_times=2000, n_outputs=9, head="all_patch_reps")
    assert count_parameters(teacher.head) == 128_404_009


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "module.backbone."])
def test_wrapped_keys_with_proj_out_and_a_head_load(release, tmp_path, caplog, prefix):
    """A multi-GPU or teacher checkpoint: every key prefixed, proj_out and a head kept beside the encoder."""
    state, _ = release
    wrapped = {prefix + k: v for k, v in state.items()}
    wrapped[prefix + "head.1.weight"] = torch.zeros(2, 8)
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    teacher = CBraModTeacher(n_chans=4, n_times=400, n_outputs=2, head="linear")
    with caplog.at_level(logging.INFO, logger="biokd.eeg.cbramod"):
        report = load_pretrained(teacher, path)
    assert report["loaded"] == 209
    assert sorted(report["ignored"]) == sorted(
        prefix + k for k in ("proj_out.0.weight", "proj_out.0.bias", "head.1.weight")
    )
    assert "proj_out.* (the pretraining" in caplog.text and "head.* (a biokd teacher head" in caplog.text
    key = "encoder.layers.7.linear1.weight"
    assert torch.equal(teacher.backbone.state_dict()[key], state[key])
