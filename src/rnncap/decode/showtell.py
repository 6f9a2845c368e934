"""Captions from the classic Show-and-Tell checkpoint (`rnncap.models.showtell`) through the one
beam search; beam size 1 is the original sample.py's greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from rnncap.decode.beam import DecodeOptions, decode

GREEDY = DecodeOptions(beam_size=1)  # the original's decoding


@torch.no_grad()
def caption_images(
    model, images: Sequence[Image.Image], options: DecodeOptions = GREEDY, batch_size: int = 16
) -> list[str]:
    """One caption per PIL image (any mode), without `<start>`/`<end>`.

    model: a loaded `ShowTell`; images are preprocessed and encoded `batch_size` at a time, and
    searched with `options` (its beam size, max_length, length_penalty and no_repeat_ngram).
    """
    device = model.decoder.linear.weight.device
    captions: list[str] = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([model.preprocess(im) for im in images[start : start + batch_size]])
        decoded = decode(model.decoder, model.encode(batch.to(device)), options)  # (N, E) in
        captions += [model.vocab.decode(tokens) for tokens in decoded.tokens]
    return captions
