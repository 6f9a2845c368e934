"""The NumPy NumpyCaptioner: loss gradients against centred differences and a torch float64
model built from torch's own layers, shape errors, and overfitting 50 real Flickr8k captions."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnncap.numpy_ref import Adam, NumpyCaptioner, NumpyCaptionerConfig, rel_error
from rnncap.numpy_ref.checks import LOSS_TOLERANCE, POINTS, STEP
from rnncap.numpy_ref.gradcheck import eval_numerical_gradient

PAD, START, END = 0, 1, 2
CELL_TYPES = ["rnn", "lstm", "attn"]


def ifog_to_ifgo(W: np.ndarray) -> np.ndarray:
    """Swap the o and g blocks of the last axis: NumPy i, f, o, g <-> torch i, f, g, o."""
    i, f, o, g = np.split(W, 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)


def torch_loss(model: NumpyCaptioner, features: np.ndarray, captions: np.ndarray):
    """The captioner's loss from torch layers (nn.RNN, nn.LSTMCell, SDPA, cross_entropy).

    Returns (loss, {name: tensor with .grad after backward}) in NumPy parameter layout.
    """
    cfg = model.config
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    N, T = captions.shape
    words_in = torch.from_numpy(captions[:, :-1])
    x = F.embedding(words_in, p["W_embed"])  # (N, T-1, D)
    D, H = cfg.wordvec_dim, cfg.hidden_dim
    zeros = torch.zeros_like(p["b"])
    if cfg.cell_type == "rnn":
        h0 = torch.from_numpy(features) @ p["W_proj"] + p["b_proj"]  # (N, H)
        rnn = torch.nn.RNN(D, H, batch_first=True, dtype=torch.float64)
        weights = {
            "weight_ih_l0": p["Wx"].T,
            "weight_hh_l0": p["Wh"].T,
            "bias_ih_l0": p["b"],
            "bias_hh_l0": zeros,
        }
        h, _ = functional_call(rnn, weights, (x, h0[None]))
    else:
        perm = torch.from_numpy(ifog_to_ifgo(np.arange(4 * H)))  # i, f, o, g -> i, f, g, o
        if cfg.cell_type == "lstm":
            h_t = torch.from_numpy(features) @ p["W_proj"] + p["b_proj"]  # (N, H)
            c_t, A, W_in = torch.zeros_like(h_t), None, p["Wx"]
        else:
            grid = torch.from_numpy(features.reshape(N, features.shape[1], -1))  # (N, C, P)
            A = (grid.transpose(1, 2) @ p["W_proj"] + p["b_proj"]).transpose(1, 2)  # (N, H, P)
            h_t = c_t = A.mean(dim=2)
            W_in = torch.cat([p["Wx"], p["Wattn"]], dim=0)  # the cell reads [x, context]
        cell = torch.nn.LSTMCell(W_in.shape[0], H, dtype=torch.float64)
        weights = {
            "weight_ih": W_in.T[perm],
            "weight_hh": p["Wh"].T[perm],
            "bias_ih": p["b"][perm],
            "bias_hh": zeros,
        }
        outputs = []
        for t in range(T - 1):
            inputs = x[:, t]
            if A is not None:
                kv = A.transpose(1, 2)  # (N, P, H)
                context = F.scaled_dot_product_attention(h_t[:, None], kv, kv)[:, 0]
                inputs = torch.cat([inputs, context], dim=1)
            h_t, c_t = functional_call(cell, weights, (inputs, (h_t, c_t)))
            outputs.append(h_t)
        h = torch.stack(outputs, dim=1)  # (N, T-1, H)
    logits = h @ p["W_vocab"] + p["b_vocab"]  # (N, T-1, V)
    targets = torch.from_numpy(captions[:, 1:])
    per_step = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD, reduction="none")
    loss = per_step.sum() / N
    loss.backward()
    return loss.item(), p


def make_problem(cell_type, N=3, T=6, V=11, C=7, seed=0):
    rng = np.random.default_rng(seed)
    config = NumpyCaptionerConfig(
        vocab_size=V, input_dim=C, wordvec_dim=4, hidden_dim=5, cell_type=cell_type, seed=seed
    )
    shape = (N, C, 2, 3) if cell_type == "attn" else (N, C)
    features = rng.standard_normal(shape)
    captions = rng.integers(3, V, size=(N, T))
    captions[:, 0] = START
    if T > 4:
        captions[0, 3], captions[0, 4:] = END, PAD  # a short caption
    if N > 1:
        captions[-1, 1:] = PAD  # a row whose mask is all zeros
    return NumpyCaptioner(config), features, captions


@pytest.mark.parametrize("cell_type", CELL_TYPES)
@pytest.mark.parametrize("N,T", [(3, 6), (1, 2)])
def test_captioner_loss_matches_torch(cell_type, N, T):
    model, features, captions = make_problem(cell_type, N, T)
    loss, grads = model.loss(features, captions)
    loss_torch, params = torch_loss(model, features, captions)
    assert loss == pytest.approx(loss_torch, rel=1e-12)
    assert set(grads) == set(model.params)
    for name, grad in grads.items():
        np.testing.assert_allclose(
            grad, params[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_captioner_numerical_gradients(cell_type):
    model, features, captions = make_problem(cell_type, N=2, T=4, seed=3)
    _, grads = model.loss(features, captions)
    for name, param in model.params.items():
        numeric = eval_numerical_gradient(
            lambda _: model.loss(features, captions)[0], param, STEP, POINTS
        )
        assert rel_error(numeric, grads[name]) < LOSS_TOLERANCE, name


@pytest.mark.parametrize(
    "cell_type,features,message",
    [
        ("rnn", np.zeros((3, 8)), r"features: expected shape \(N, C\) = \(3, 7\), got \(3, 8\)"),
        ("lstm", np.zeros((3, 7, 2)), r"features: expected shape \(N, C\), got \(3, 7, 2\)"),
        ("attn", np.zeros((3, 7)), r"features: expected shape \(N, C, P\), got \(3, 7\)"),
        ("attn", np.zeros((3, 6, 2, 2)), r"features: expected shape \(N, C, P\) = \(3, 7, 4\)"),
        ("rnn", np.zeros((2, 7)), r"captions: expected shape \(N, T\) = \(2, T\), got \(3, 6\)"),
    ],
)
def test_captioner_wrong_shapes_raise(cell_type, features, message):
    model, _, captions = make_problem(cell_type)
    with pytest.raises(ValueError, match=message):
        model.loss(features, captions)


def test_captioner_rejects_bad_cell_type_and_captions():
    with pytest.raises(ValueError, match=r"cell_type: expected one of .*'gru'"):
        NumpyCaptioner(NumpyCaptionerConfig(vocab_size=5, cell_type="gru"))
    model, features, _ = make_problem("rnn")
    with pytest.raises(ValueError, match=r"captions: expected shape \(N, T\) with T >= 2"):
        model.loss(features, np.ones((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"captions: word ids must lie in \[0, 11\), got 1..11"):
        model.loss(features, np.array([[1, 11], [1, 2], [1, 2]]))
    with pytest.raises(ValueError, match=r"captions: expected integer word ids"):
        model.loss(features, np.ones((3, 4)))


def load_captions(flickr8k_dir, count):
    """The first `count` captions of captions.txt ("image,caption"; the caption may hold commas)."""
    lines = (flickr8k_dir / "captions.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].strip() == "image,caption"
    return [line.split(",", 1)[1] for line in lines[1 : count + 1]]


def encode(captions):
    """Lower-case word ids with <pad> 0, <start> 1, <end> 2; returns (ids (N, T), vocab size)."""
    tokens = [re.findall(r"[a-z0-9]+", caption.lower()) for caption in captions]
    words = sorted({word for sentence in tokens for word in sentence})
    index = {word: i + 4 for i, word in enumerate(words)}  # 3 is <unk>, unused here
    ids = np.full((len(tokens), max(map(len, tokens)) + 2), PAD, dtype=np.int64)
    for n, sentence in enumerate(tokens):
        row = [START, *(index[w] for w in sentence), END]
        ids[n, : len(row)] = row
    return ids, len(words) + 4


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_captioner_overfits_50_flickr8k_captions(flickr8k_dir, cell_type):
    captions, vocab_size = encode(load_captions(flickr8k_dir, 50))
    N, T = captions.shape
    rng = np.random.default_rng(0)
    C = 16
    features = rng.standard_normal((N, C, 2, 2) if cell_type == "attn" else (N, C))
    config = NumpyCaptionerConfig(
        vocab_size=vocab_size, input_dim=C, wordvec_dim=32, hidden_dim=32, cell_type=cell_type
    )
    model = NumpyCaptioner(config)
    optimiser = Adam(lr=3e-2)
    for _ in range(400):
        loss, grads = model.loss(features, captions)
        if loss < 0.1:
            break
        optimiser.step(model.params, grads)
    assert loss < 0.1  # per caption: summed over time, averaged over captions

    samples = model.sample(features, max_length=T - 1)  # (N, T-1), no <start>
    np.testing.assert_array_equal(samples, captions[:, 1:])
