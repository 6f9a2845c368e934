"""Sampling captions from a captioning model: K captions per image, batched, for self-critical
training (each sample's reward is compared with the mean reward of the image's other samples).
"""

from __future__ import annotations

import torch

from rnncap.decode.beam import rows_per_image


@torch.no_grad()
def sample_captions(
    model,
    features: torch.Tensor,
    samples_per_image: int,
    max_length: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `samples_per_image` captions per image from the model's own distribution.

    features: (N, ...) encoder features. Returns token ids (N * K, L) without <start>, where the
    K samples of image n are rows n*K .. n*K+K-1; a caption ends with <end> (kept) and is followed
    by padding; one that reaches `max_length` words has no <end>. Words the model never emits
    (padding, <start>, <unk>) are excluded from the draw.
    """
    if samples_per_image < 1:
        raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    cfg = model.config
    max_length = cfg.max_length if max_length is None else max_length
    K = samples_per_image
    state = model.init_state(features)
    state, _ = rows_per_image(model, state, K)
    B = state[0].shape[0]  # (N*K, ...)
    device = state[0].device
    tokens = torch.full((B,), cfg.start_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    out = torch.full((B, max_length), cfg.pad_id, dtype=torch.long, device=device)
    banned = [cfg.pad_id, cfg.start_id, cfg.unk_id]
    for t in range(max_length):
        log_probs, state, _ = model.step(tokens, state)  # (B, V)
        log_probs = log_probs.float() / temperature
        log_probs[:, banned] = float("-inf")
        probs = torch.softmax(log_probs, dim=-1)
        word = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        word = word.masked_fill(finished, cfg.pad_id)  # (B,)
        out[:, t] = word
        finished |= word == cfg.end_id
        tokens = word
        if bool(finished.all()):
            return out[:, : t + 1]
    return out
