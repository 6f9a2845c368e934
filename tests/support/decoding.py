"""Tiny random captioning models and features for the decoding tests: beam search against brute
force and against a textbook search. Each test file sharpens the model its own way."""

from __future__ import annotations

import itertools

import torch

from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN


def tiny_decoder(
    cell_type: str, seed: int, words: int, max_length: int, deep_output: bool = False
) -> CaptioningRNN:
    """A float64 model in eval mode over `words` ordinary words (ids 4.. after the specials)."""
    torch.manual_seed(seed)
    cfg = CaptionerConfig(
        encoder="none",
        feature_dim=6,
        cell_type=cell_type,
        wordvec_dim=5,
        hidden_dim=7,
        vocab_size=4 + words,
        max_length=max_length,
        deep_output=deep_output,
    )
    return CaptioningRNN(cfg).double().eval()


def random_features(cell_type: str, n: int, seed: int) -> torch.Tensor:
    """Features for n images: a 2 x 2 grid for attention models, a vector otherwise."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 6, 2, 2) if cell_type == "attn" else (n, 6)
    return torch.randn(shape, generator=g, dtype=torch.float64)


BACKENDS = ("torch", "numpy")  # the decoders the one beam search is tested with


def on_backend(model: CaptioningRNN, features: torch.Tensor, backend: str):
    """(decoder, features) for the search: the torch model as it is, or the NumPy decoder with
    the same weights (in the model's dtype) and the features as a NumPy array."""
    if backend == "torch":
        return model, features
    from rnncap.models.numpy_decoder import NumpyDecoder

    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dtype = weights["embed.weight"].dtype
    return NumpyDecoder(model.config, weights, dtype), features.numpy()


@torch.no_grad()
def log_prob(model, feature, words, max_length, bonus=None) -> float:
    """Score of one caption, one word at a time (the independent reference of the search): its
    words' log-probabilities, <end>'s when it is shorter than max_length, and each word's bonus
    (V,) once."""
    state = model.init_state(feature[None])
    token = torch.tensor([model.config.start_id])
    total, said = 0.0, set()
    ending = [model.config.end_id] if len(words) < max_length else []
    for w in list(words) + ending:
        log_probs, state, _ = model.step(token, state)
        total += float(log_probs[0, w])
        if bonus is not None and w not in said:
            total += float(bonus[w])
            said.add(w)
        token = torch.tensor([w])
    return total


def brute_force(model, feature, max_length, allowed=lambda words: True, bonus=None):
    """(caption, score): the best of every caption of at most max_length of the tiny model's
    ordinary words (ids 4..) that `allowed` accepts, each scored by `log_prob`."""
    words = range(4, model.config.vocab_size)
    candidates = [
        seq
        for L in range(max_length + 1)
        for seq in itertools.product(words, repeat=L)
        if allowed(seq)
    ]
    return max(
        ((seq, log_prob(model, feature, seq, max_length, bonus)) for seq in candidates),
        key=lambda s: s[1],
    )
