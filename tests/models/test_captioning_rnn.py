"""CaptioningRNN: teacher forcing agrees with step-by-step decoding; loss and config checks."""

from __future__ import annotations

import pytest
import torch

from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN, list_cell_types
from rnncap.nn.loss import captioning_loss


def make(cell_type: str, deep_output: bool = False) -> CaptioningRNN:
    torch.manual_seed(0)
    cfg = CaptionerConfig(
        encoder="none",
        feature_dim=8,
        cell_type=cell_type,
        wordvec_dim=6,
        hidden_dim=10,
        vocab_size=12,
        deep_output=deep_output,
    )
    return CaptioningRNN(cfg).double().eval()


def feats(cell_type: str, n: int) -> torch.Tensor:
    return torch.randn((n, 8, 3, 3) if cell_type == "attn" else (n, 8), dtype=torch.float64)


@pytest.mark.parametrize("deep_output", [False, True])
@pytest.mark.parametrize("cell_type", list_cell_types())
def test_teacher_forcing_equals_stepping(cell_type, deep_output):
    model = make(cell_type, deep_output)
    f = feats(cell_type, 3)
    captions = torch.randint(4, 12, (3, 5))
    logits, weights = model(f, captions)
    state = model.init_state(f)
    for t in range(5):
        log_probs, state, w = model.step(captions[:, t], state)
        torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, t], -1))
        if cell_type == "attn":
            torch.testing.assert_close(w, weights[:, t])


@pytest.mark.parametrize("deep_output", [False, True])
def test_rows_sharing_an_images_grid_step_like_teacher_forcing(deep_output):
    # A search steps several rows per image (and subsets of them) over one grid per image: the
    # attention state's `image` maps rows to grids. Each row must follow its own caption as the
    # teacher-forced model, which gets a copy of the features per row.
    model = make("attn", deep_output)
    f = feats("attn", 3)
    image = torch.tensor([0, 0, 2, 1, 2, 2])  # rows per image: 2, 1, 3
    captions = torch.randint(4, 12, (6, 4))
    logits, weights = model(f[image], captions)
    h, c, A, _ = model.init_state(f)
    state = (h[image], c[image], A, image)
    for t in range(4):
        log_probs, state, w = model.step(captions[:, t], state)
        torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, t], -1))
        torch.testing.assert_close(w, weights[:, t])
    assert state[2] is A  # the grids are never copied


@pytest.mark.parametrize("cell_type", list_cell_types())
def test_repeats_share_one_projection_per_image(cell_type):
    model = make(cell_type)
    f = feats(cell_type, 2)
    captions = torch.randint(4, 12, (5, 6))
    counts = torch.tensor([2, 3])
    grouped, _ = model(f, captions, counts)
    expanded, _ = model(f.repeat_interleave(counts, 0), captions)
    torch.testing.assert_close(grouped, expanded)


def test_loss_is_cross_entropy_summed_over_time():
    model = make("lstm")
    f = feats("lstm", 4)
    captions = torch.randint(4, 12, (4, 7))
    captions[:, 0] = 1
    captions[2, 4:] = 0  # padding is ignored
    logits, _ = model(f, captions[:, :-1])
    loss = captioning_loss(logits, captions[:, 1:])
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 12), captions[:, 1:].reshape(-1), ignore_index=0, reduction="sum"
    )
    torch.testing.assert_close(loss, ce / 4)


def test_bad_config_and_features():
    with pytest.raises(ValueError, match="cell_type"):
        CaptionerConfig(cell_type="gru", vocab_size=10)
    with pytest.raises(ValueError, match="vocab_size"):
        CaptionerConfig(vocab_size=0)
    model = make("attn")
    with pytest.raises(ValueError, match="channels"):
        model.init_state(torch.randn(2, 5, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="grid"):
        model.init_state(torch.randn(2, 8, dtype=torch.float64))
