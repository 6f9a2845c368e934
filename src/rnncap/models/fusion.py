"""Language models fused into the captioner's next-word scores at decoding time.

Shallow fusion (Gulcehre et al. 2015) adds a weighted language model of the target text,
log p(w) = log p_cap(w | image) + lambda log p_lm(w); the density-ratio method (McDermott et al.
2019) also subtracts one of the captioner's own training text, - mu log p_source(w), so that
the captioner's learned language prior is traded for the target's. `FusedDecoder` wraps a
captioner in the `init_state` / `step` interface that the one beam search uses, so blocking,
guidance, endings and the early stop apply to the fused scores unchanged.

A model folder carries its language models as subfolders written by `rnncap lm`:
`lm/` (the target text's) and `source_lm/` (the training captions'), each with the captioner's
vocabulary; config.json "decoding" holds their weights (`lm_weight`, `source_lm_weight`).
"""

from __future__ import annotations

from pathlib import Path

import torch

LM_FOLDERS = ("lm", "source_lm")  # a model folder's language models, by decoding-weight name


class FusedDecoder:
    """A captioner whose step log-probabilities (B, V) gain sum_i w_i log p_lm_i(word | words).

    terms: (language model, weight) pairs; a negative weight subtracts (density ratio). The
    state is the captioner's entries followed by each language model's (h, c), one row per
    hypothesis, so the search reorders them like the captioner's own.
    """

    def __init__(self, model, terms: list[tuple[torch.nn.Module, float]]) -> None:
        self.model = model
        self.terms = [(lm, float(w)) for lm, w in terms if w != 0]
        self.config = model.config
        self.static_state = model.static_state  # the captioner's entries come first
        # with a subtracted model a step can score above 0: the search's early stop (which
        # assumes scores only fall) must not be used
        self.steps_nonpositive = all(w > 0 for _, w in self.terms)
        self._captioner_entries = 0

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.model.init_state(features)
        self._captioner_entries = len(state)
        rows = state[0].shape[0]
        for lm, _ in self.terms:
            state += tuple(s.to(state[0].dtype) for s in lm.init_state(rows))
        return state

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """(fused log-probabilities (B, V), new state, the captioner's attention (B, P) | None)."""
        n = self._captioner_entries
        log_probs, new_state, weights = self.model.step(tokens, state[:n])
        rest = state[n:]
        for lm, weight in self.terms:
            k = lm.state_entries
            logits, lm_state = lm.step(tokens, rest[:k])  # (B, V)
            log_probs = log_probs + weight * torch.log_softmax(logits.to(log_probs.dtype), dim=-1)
            new_state += tuple(lm_state)
            rest = rest[k:]
        return log_probs, new_state, weights


def fusion_terms(lms: dict, lm_weight: float, source_lm_weight: float) -> list:
    """The (model, weight) pairs for the options' weights; ConfigError naming the weight when it
    is set but the model folder has no such language model."""
    from rnncap.utils.config import ConfigError

    terms = []
    for name, weight in (("lm", lm_weight), ("source_lm", -source_lm_weight)):
        if weight == 0:
            continue
        if name not in lms:
            raise ConfigError(f"{name}_weight", f"set, but the model folder has no {name}/")
        terms.append((lms[name], weight))
    return terms


def language_model_for(path: str | Path, vocab, device="cpu"):
    """The language model in folder `path` (`rnncap lm`), in eval mode; InvalidFileError
    (naming the file) when it cannot be used or its vocabulary is not `vocab`, the captioner's."""
    from rnncap.models.lm import load_language_model
    from rnncap.utils.io import InvalidFileError

    model, lm_vocab = load_language_model(path, device)
    if lm_vocab != vocab:
        raise InvalidFileError(Path(path) / "vocab.json", "is not the captioner's vocabulary")
    return model.eval()


def load_language_models(folder: str | Path, vocab, device) -> dict:
    """The model folder's language models, name -> model in eval mode (none: {});
    `language_model_for` checks each."""
    folders = {name: Path(folder) / name for name in LM_FOLDERS}
    return {n: language_model_for(p, vocab, device) for n, p in folders.items() if p.is_dir()}
