"""Pictures: attention heatmaps over the photo, one per emitted word, and training curves.

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas (no display needed, no
global backend switch); files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rnncap.utils.io import atomic_write

MAX_SIDE = 320  # the photo is shrunk to at most this many pixels per side in the figure
COLUMNS = 5  # panels per row
DPI = 80


def upsample_attention(
    weights: torch.Tensor | np.ndarray, grid: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Weights (P,) over an h x w grid -> a smooth (H, W) map for a picture of size (W, H).

    Bilinear interpolation (cell centres aligned, as `align_corners=False`), scaled so that its
    maximum is 1 (an all-zero map stays zero). The model resizes the whole photo to its input
    square without cropping, so the grid covers the whole photo.
    """
    h, w = grid
    weights = torch.as_tensor(np.asarray(weights, dtype=np.float32)).reshape(1, 1, h, w)
    width, height = size
    heat = torch.nn.functional.interpolate(
        weights, size=(height, width), mode="bilinear", align_corners=False
    )[0, 0].numpy()  # (H, W)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def attention_figure(
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
    caption: str | None = None,
):
    """A matplotlib Figure: the photo, then one panel per word with its heatmap, the word as title.

    attention: (L, P) with L = len(words) and P = h * w.
    """
    from matplotlib.figure import Figure

    attention = np.asarray(attention, dtype=np.float32)
    if attention.ndim != 2 or attention.shape[0] != len(words):
        raise ValueError(
            f"attention has shape {attention.shape}, expected ({len(words)}, {grid[0] * grid[1]})"
        )
    if attention.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"attention has {attention.shape[1]} cells, grid {grid} has {math.prod(grid)}"
        )
    photo = image.convert("RGB")
    photo.thumbnail((MAX_SIDE, MAX_SIDE), Image.BICUBIC)
    pixels = np.asarray(photo)  # (H, W, 3)
    panels = 1 + len(words)
    cols = min(COLUMNS, panels)
    rows = math.ceil(panels / cols)
    aspect = photo.height / photo.width
    fig = Figure(
        figsize=(2.6 * cols, (2.6 * aspect + 0.4) * rows + 0.4), dpi=DPI, layout="constrained"
    )
    for k in range(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(pixels)
        ax.set_axis_off()
        if k == 0:
            ax.set_title("<image>", fontsize=11)
            continue
        heat = upsample_attention(attention[k - 1], grid, photo.size)
        ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0.0, vmax=1.0)
        ax.set_title(words[k - 1], fontsize=12)
    if caption is not None:
        fig.suptitle(caption, fontsize=12)
    return fig


def save_attention_png(
    path: str | os.PathLike,
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
    caption: str | None = None,
) -> Path:
    """Render `attention_figure` to a PNG at `path` atomically (a temporary file renamed)."""
    return save_figure_png(attention_figure(image, words, attention, grid, caption), path)


def save_figure_png(fig, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Render a Figure with the Agg canvas to a PNG at `path`, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)

    return atomic_write(path, write)


def plot_training_curves(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """A captioner's run: train/dev loss and dev CIDEr per epoch (records of metrics.jsonl), and
    the mean CIDEr-D reward of the sampled captions for self-critical epochs."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    rewards = [h.get("train_reward", float("nan")) for h in history]
    scst = any("train_reward" in h for h in history)
    fig = Figure(figsize=(15 if scst else 10, 4), layout="tight")
    a, b, *c = fig.subplots(1, 3 if scst else 2)
    if c:
        c[0].plot(epochs, rewards, "o-", color="C3")
        c[0].set(xlabel="epoch", ylabel="mean reward of samples (CIDEr-D)")
    if not scst:  # a self-critical train loss is a policy-gradient loss, not cross-entropy
        a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["dev_loss"] for h in history], "o-", label="dev")
    a.set(xlabel="epoch", ylabel="cross-entropy per caption")
    a.legend()
    b.plot(epochs, [h.get("dev_cider", float("nan")) for h in history], "o-", color="C2")
    b.set(xlabel="epoch", ylabel="dev CIDEr (greedy)")
    return save_figure_png(fig, path, dpi=100)


def plot_lm_history(history, path: str | os.PathLike, title: str) -> Path:
    """A language model's run: train loss per step, train/validation perplexity per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="tight")
    left, right = fig.subplots(1, 2)
    left.plot(history.step_loss, linewidth=0.7)
    left.set(xlabel="step", ylabel="train cross-entropy (nats/word)", title=title)
    epochs = range(1, len(history.epoch_val_ppl) + 1)
    right.plot(epochs, history.epoch_train_ppl, "o-", label="train")
    right.plot(epochs, history.epoch_val_ppl, "o-", label="validation")
    right.set(xlabel="epoch", ylabel="perplexity", title="perplexity")
    right.legend()
    return save_figure_png(fig, path, dpi=100)
