"""int8 block storage of a model folder's weights (`rnncap.models.weight_store`): the codes are
the nearest of the 255 levels (checked by brute force over all of them), both readers (torch and
NumPy) get the same float32 values, and a damaged file is refused naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import beam_search
from rnncap.models.captioner_config import CaptionerConfig
from rnncap.models.captioning_rnn import CaptioningRNN
from rnncap.models.folder import WEIGHTS, load_model, save_model
from rnncap.models.numpy_decoder import read_numpy_weights
from rnncap.models.weight_store import (
    BLOCK,
    SCALE_SUFFIX,
    dequantize_int8,
    pack,
    quantize_int8,
    read_arrays,
)
from rnncap.utils.io import InvalidFileError


def nearest_levels(weight: np.ndarray, block: int) -> np.ndarray:
    """Brute force: each value replaced by the closest of k * s, k in -127..127, where s is its
    block's largest magnitude / 127 rounded to float16 (float64 arithmetic throughout)."""
    rows = weight.astype(np.float64).reshape(-1, block)
    out = np.empty_like(rows)
    levels = np.arange(-127, 128, dtype=np.float64)
    for i, row in enumerate(rows):
        s = float(np.float16(np.abs(row).max() / 127.0))
        candidates = levels * s  # (255,)
        out[i] = candidates[np.abs(row[:, None] - candidates[None, :]).argmin(axis=1)]
    return out.reshape(weight.shape)


def test_codes_are_the_nearest_level_of_their_block():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 4 * BLOCK)).astype(np.float32)
    weight[1, :BLOCK] *= 1000.0  # a block of large values beside ordinary ones
    weight[2, BLOCK : 2 * BLOCK] = 0.0  # an all-zero block
    codes, scale = quantize_int8(weight)
    assert codes.dtype == np.int8 and codes.shape == weight.shape
    assert scale.dtype == np.float16 and scale.shape == (6, 4)
    restored = dequantize_int8(codes, scale)
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, nearest_levels(weight, BLOCK), rtol=1e-6, atol=0)
    assert np.all(restored[2, BLOCK : 2 * BLOCK] == 0.0)
    step = np.repeat(scale.astype(np.float32), BLOCK, axis=1)
    assert np.all(np.abs(restored - weight) <= step / 2 * (1 + 1e-3))


def test_pack_quantizes_matrices_whose_rows_split_into_blocks():
    state = {
        "matrix": np.ones((3, 2 * BLOCK), np.float32),
        "narrow": np.ones((3, BLOCK + 1), np.float32),
        "bias": np.ones(2 * BLOCK, np.float32),
        "steps": np.arange(3, dtype=np.int64),
    }
    packed = pack(state, "int8")
    assert {k: v.dtype for k, v in packed.items()} == {
        "matrix": np.int8,
        "matrix" + SCALE_SUFFIX: np.float16,
        "narrow": np.float16,
        "bias": np.float16,
        "steps": np.int64,
    }
    assert all(v.dtype == np.float16 for k, v in pack(state, "float16").items() if k != "steps")
    assert all(pack(state, "float32")[k] is v for k, v in state.items())
    with pytest.raises(ValueError, match="expected one of float32, float16, int8"):
        pack(state, "int4")


def _model(cell_type: str) -> tuple[CaptioningRNN, Vocabulary]:
    """Gates 4 x 16 = 64 wide and 64-dim word vectors: the big matrices are stored as int8."""
    torch.manual_seed(0)
    vocab = Vocabulary([f"w{i}" for i in range(20)])
    config = CaptionerConfig(
        encoder="tiny",
        feature_dim=64,
        cell_type=cell_type,
        wordvec_dim=64,
        hidden_dim=16,
        vocab_size=len(vocab),
        max_length=6,
    )
    return CaptioningRNN(config).eval(), vocab


@pytest.mark.parametrize("cell_type", ["lstm", "attn"])
def test_an_int8_folder_reads_the_same_in_torch_and_numpy(tmp_path, cell_type):
    model, vocab = _model(cell_type)
    folder = save_model(tmp_path / "m", model, vocab, weights="int8")
    stored = load_file(str(folder / WEIGHTS))
    assert stored["cell.Wx"].dtype == np.int8 and stored["embed.weight"].dtype == np.int8
    assert stored["cell.b"].dtype == np.float16
    loaded, _ = load_model(folder)
    arrays = read_numpy_weights(folder, model.config)
    by_hand = {}
    for name, weight in model.state_dict().items():
        original = weight.numpy()
        expected = nearest_levels(original, BLOCK) if name + SCALE_SUFFIX in stored else None
        if expected is None:  # float16-rounded
            expected = original.astype(np.float16).astype(np.float32)
        got = loaded.state_dict()[name]
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(arrays[name], got.numpy())
        by_hand[name] = torch.from_numpy(expected.astype(np.float32))
    # The loaded model searches as the original with its weights put on the levels by hand.
    rounded, _ = _model(cell_type)
    rounded.load_state_dict(by_hand)
    shape = (3, 64, 2, 2) if cell_type == "attn" else (3, 64)
    features = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    assert beam_search(loaded, features, beam_size=2).tokens == (
        beam_search(rounded, features, beam_size=2).tokens
    )
    size = (folder / WEIGHTS).stat().st_size
    plain = (save_model(tmp_path / "f32", model, vocab) / WEIGHTS).stat().st_size
    assert size < 0.4 * plain


def _damaged(tmp_path, change) -> tuple:
    codes, scale = quantize_int8(np.ones((2, 2 * BLOCK), np.float32))
    tensors = {"w": codes, "w" + SCALE_SUFFIX: scale}
    change(tensors)
    path = tmp_path / WEIGHTS
    save_file(tensors, str(path))
    return path, {"w": (2, 2 * BLOCK)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update({"w" + SCALE_SUFFIX: np.ones((2, 3), np.float16)}), "into blocks"),
        (lambda t: t.update({"w" + SCALE_SUFFIX: np.ones((4,), np.float16)}), "into blocks"),
        (lambda t: t.update({"w": np.ones((2, 2 * BLOCK), np.float32)}), "not int8"),
        (lambda t: t.update({"v" + SCALE_SUFFIX: np.ones((2, 2), np.float16)}), "no tensor 'v'"),
        (lambda t: t.pop("w"), "missing tensor 'w'"),
        (lambda t: t.pop("w" + SCALE_SUFFIX), "'w' is stored as I8"),  # codes read as weights
        (lambda t: t.update({"w": np.ones((2, 2 * BLOCK), np.int32)}), r"not int8 \(I32\)"),
        (
            lambda t: (
                t.update({"w": np.ones((2, 2 * BLOCK), np.int32)}) or t.pop("w" + SCALE_SUFFIX)
            ),
            "as I32",
        ),
        (lambda t: t.update({"w" + SCALE_SUFFIX: np.ones((2, 2), np.float32)}), "not F16"),
        (lambda t: t["w" + SCALE_SUFFIX].__setitem__((0, 1), np.nan), "not finite"),
    ],
)
def test_a_damaged_int8_file_is_refused_naming_it(tmp_path, change, message):
    path, expected = _damaged(tmp_path, change)
    with pytest.raises(InvalidFileError, match=message) as error:
        read_arrays(path, expected)
    assert str(path) in str(error.value)


def test_an_undamaged_file_reads(tmp_path):
    path, expected = _damaged(tmp_path, lambda t: None)
    ones = nearest_levels(np.ones((2, 2 * BLOCK)), BLOCK)  # 127 x (1 / 127 in float16)
    np.testing.assert_allclose(read_arrays(path, expected)["w"], ones, rtol=1e-6, atol=0)


def test_a_bfloat16_weight_is_refused_naming_the_file(tmp_path):
    """NumPy has no bfloat16: the file is refused in one line rather than failing inside NumPy."""
    from safetensors.torch import save_file as save_torch

    path = tmp_path / WEIGHTS
    save_torch({"w": torch.ones(2, 2 * BLOCK, dtype=torch.bfloat16)}, str(path))
    with pytest.raises(InvalidFileError, match="'w' is stored as BF16") as error:
        read_arrays(path, {"w": (2, 2 * BLOCK)})
    assert str(path) in str(error.value)


def test_floating_weights_of_any_width_read_as_float32(tmp_path):
    weights = {"a": np.full((2, 3), 0.5, np.float16), "b": np.full(3, 0.25, np.float64)}
    save_file(weights, str(tmp_path / WEIGHTS))
    arrays = read_arrays(tmp_path / WEIGHTS, {"a": (2, 3), "b": (3,)})
    assert {k: v.dtype for k, v in arrays.items()} == {"a": np.float32, "b": np.float32}
    assert arrays["a"][0, 0] == 0.5 and arrays["b"][0] == 0.25
