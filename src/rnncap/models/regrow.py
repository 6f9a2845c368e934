"""A trained captioner moved onto another vocabulary: the rows of the words both vocabularies
share are copied, the other words start fresh. Fine-tuning a model on new data whose words it has
not seen (a Flickr8k model learning COCO's words) starts from everything it already knows.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from rnncap.data.vocab import SPECIALS, Vocabulary
from rnncap.models.captioning_rnn import CaptioningRNN
from rnncap.models.folder import IncompatibleModelError

_VOCAB_ROWS = ("embed.weight", "vocab_proj.weight", "vocab_proj.bias")  # (V, ...) each


def grown_vocabulary(old: Vocabulary, new_words: Vocabulary) -> Vocabulary:
    """`old`'s words in their order, then the words of `new_words` that `old` lacks."""
    added = [w for w in new_words.itos[len(SPECIALS) :] if w not in old]
    return Vocabulary([*old.itos[len(SPECIALS) :], *added])


@torch.no_grad()
def with_vocabulary(
    model: CaptioningRNN, old: Vocabulary, new: Vocabulary, seed: int = 0
) -> CaptioningRNN:
    """A copy of `model` over `new`: every weight that does not depend on the vocabulary as is,
    the embedding and output rows of the words of `old` copied to their ids in `new`. A new
    word's embedding is drawn as at initialisation, its output weights are zero and its output
    bias is the lowest of `old`'s, so no new word is more likely than the rarest old one until
    training says so."""
    if model.config.vocab_size != len(old):
        raise IncompatibleModelError(
            f"the model has {model.config.vocab_size} words, its vocabulary {len(old)}"
        )
    grown = CaptioningRNN(replace(model.config, vocab_size=len(new)))
    state = model.state_dict()
    fresh = grown.state_dict()
    shared = [(i, new.stoi[w]) for i, w in enumerate(old.itos) if w in new]
    src = torch.tensor([i for i, _ in shared])  # (S,) ids in old
    dst = torch.tensor([j for _, j in shared])  # (S,) the same words' ids in new
    generator = torch.Generator().manual_seed(seed)
    for name, value in state.items():
        if name not in _VOCAB_ROWS:
            fresh[name] = value.clone()
            continue
        rows = torch.empty((len(new), *value.shape[1:]), dtype=value.dtype)
        if name == "embed.weight":
            rows.normal_(0.0, 0.1, generator=generator)
        elif name == "vocab_proj.weight":
            rows.zero_()
        else:
            rows.fill_(float(value.min()) if math.isfinite(float(value.min())) else 0.0)
        rows[dst] = value[src]
        fresh[name] = rows
    grown.load_state_dict(fresh, strict=True)
    return grown.to(next(model.parameters()).device)
