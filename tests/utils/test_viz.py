"""Attention pictures: the upsampled heatmap against a hand-written bilinear reference, the figure's
panels and titles, and the PNG written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rnncap.utils.plotting import attention_figure, save_attention_png, upsample_attention


def bilinear_reference(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample (h, w) -> (height, width), cell centres aligned, edges clamped; plain loops."""
    h, w = grid.shape
    out = np.zeros((height, width))
    for y in range(height):
        sy = min(max((y + 0.5) * h / height - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for x in range(width):
            sx = min(max((x + 0.5) * w / width - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
            bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out


def test_upsample_matches_bilinear_reference():
    rng = np.random.default_rng(0)
    weights = rng.random(12)
    weights /= weights.sum()
    heat = upsample_attention(weights, (3, 4), size=(29, 17))  # size is (W, H)
    expected = bilinear_reference(weights.reshape(3, 4), 17, 29)
    np.testing.assert_allclose(heat, expected / expected.max(), rtol=1e-5, atol=1e-6)


def test_heat_peaks_over_the_attended_cell():
    weights = np.zeros(7 * 7)
    weights[2 * 7 + 5] = 1.0  # row 2, column 5
    heat = upsample_attention(weights, (7, 7), size=(70, 140))  # 10 x 20 px per cell
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 2 * 20 <= y < 3 * 20 and 5 * 10 <= x < 6 * 10
    assert heat.max() == pytest.approx(1.0)


def _photo(width: int = 400, height: int = 260) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_figure_has_the_photo_then_one_panel_per_word():
    words = ["a", "cat", "on", "a", "sofa", "today", "here"]
    attention = np.random.default_rng(2).random((len(words), 12))
    fig = attention_figure(_photo(), words, attention, (3, 4), caption=" ".join(words))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["<image>", *words]
    assert fig._suptitle.get_text() == " ".join(words)
    heat_layers = [ax.get_images() for ax in fig.axes]
    assert [len(layers) for layers in heat_layers] == [1] + [2] * len(words)


def test_png_is_written_atomically(tmp_path):
    words = ["two", "dogs"]
    path = save_attention_png(
        tmp_path / "out" / "dogs.png", _photo(), words, np.ones((2, 49)) / 49, (7, 7)
    )
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 300
    with pytest.raises(ValueError, match="attention has shape"):
        save_attention_png(tmp_path / "out" / "bad.png", _photo(), words, np.ones((3, 49)), (7, 7))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dogs.png"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, f, **kwargs):
        f.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        save_attention_png(tmp_path / "x.png", _photo(), ["a"], np.ones((1, 4)), (2, 2))
    assert list(tmp_path.iterdir()) == []
