"""Self-critical sequence training (Rennie et al. 2017): raise the probability of sampled
captions that score above the image's other samples on CIDEr-D, lower those below.

The baseline of each sample is the mean reward of the other K-1 samples of the same image
(Luo 2020), so no greedy decode is needed. Runs on cached features, after cross-entropy training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from rnncap.decode.beam import words_before_end
from rnncap.decode.sample import sample_captions
from rnncap.engine.cider import CiderD
from rnncap.engine.loop import BatchShare, Step
from rnncap.engine.ptb_tokenize import ptb_tokenize
from rnncap.engine.splits import MIRROR_WORDS, CaptionSplit, batch_features


def sequence_log_probs(
    net, config, features: torch.Tensor, samples: torch.Tensor, repeats: int
) -> torch.Tensor:
    """Log-probability of each sampled caption under the model, with gradients.

    net: the model (or its DDP wrapper), config its `CaptionerConfig`; features (N, ...);
    samples (N * repeats, L) as returned by `sample_captions` (no <start>, <end> kept, padding
    after). The distribution is the one sampled from: padding, <start> and <unk> excluded.
    Returns (N * repeats,) sums over each caption's words and its <end>.
    """
    cfg = config
    start = samples.new_full((samples.shape[0], 1), cfg.start_id)
    captions_in = torch.cat([start, samples[:, :-1]], 1)  # (B, L): the word before each target
    logits, _ = net(features, captions_in, repeats)  # (B, L, V)
    never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    never[[cfg.pad_id, cfg.start_id, cfg.unk_id]] = True
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under autocast
    log_probs = torch.log_softmax(logits.masked_fill(never, float("-inf")), dim=-1)
    picked = log_probs.gather(2, samples.unsqueeze(2)).squeeze(2)  # (B, L)
    mask = samples != cfg.pad_id
    return (picked.masked_fill(~mask, 0.0)).sum(1)


def self_critical_loss(
    log_probs: torch.Tensor, rewards: torch.Tensor, samples_per_image: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with the mean of the image's other samples as baseline.

    log_probs (N*K,) with gradients, rewards (N*K,); the K samples of an image are consecutive.
    Returns (loss, advantage (N*K,)): loss = -mean(advantage * log_prob).
    """
    K = samples_per_image
    if K < 2:
        raise ValueError("self-critical training needs at least 2 samples per image")
    r = rewards.to(log_probs.device, log_probs.dtype).view(-1, K)  # (N, K)
    baseline = (r.sum(1, keepdim=True) - r) / (K - 1)  # mean of the other samples
    advantage = (r - baseline).view(-1)
    return -(advantage.detach() * log_probs).mean(), advantage


END_WORD = "endofcaption"  # closes references and finished samples when the reward sees endings


def reward_scorer(
    references: Sequence[Sequence[str]], reward_end: bool = False, mirrored: bool = False
):
    """CIDEr-D over a split's references (raw strings, one list per image). With `reward_end`
    each tokenised reference gets END_WORD appended, so n-grams such as "a END_WORD" (a caption
    cut after "a") match nothing while "grass END_WORD" does. With `mirrored`, a
    `MirroredScorer`: rows I.. 2I-1 are the mirror images, scored against "left"/"right"-swapped
    references."""
    if mirrored:
        swapped = [[mirror_text(c) for c in refs] for refs in references]
        return MirroredScorer(
            reward_scorer(references, reward_end), reward_scorer(swapped, reward_end)
        )
    if not reward_end:
        return CiderD(references)
    return CiderD([[ptb_tokenize(c) + [END_WORD] for c in refs] for refs in references])


class MirroredScorer:
    """CIDEr-D for images and their mirror images: row i < I against image i's references, row
    I + i against its mirror image's, each set with its own document frequencies (the mirror
    world's are the plain ones with "left" and "right" swapped)."""

    def __init__(self, plain: CiderD, mirrored: CiderD) -> None:
        self.plain, self.mirrored = plain, mirrored
        self.image_count = plain.image_count

    def score(self, rows: np.ndarray, captions: Sequence) -> np.ndarray:
        """rows (B,) in [0, 2I), captions (B,) -> CIDEr-D (B,)."""
        rows = np.asarray(rows)
        flipped = rows >= self.image_count  # (B,)
        out = np.zeros(len(rows))
        parts = ((self.plain, ~flipped, 0), (self.mirrored, flipped, self.image_count))
        for scorer, chosen, first in parts:
            if chosen.any():
                picked = [c for c, keep in zip(captions, chosen, strict=True) if keep]
                out[chosen] = scorer.score(rows[chosen] - first, picked)
        return out


class SourcedScorer:
    """CIDEr-D for a split made of several sources (images one source after another): each
    source's images are scored with its own document frequencies. Rows as for the single
    scorer: i < I the image, I + i its mirror image (when the scorers are `MirroredScorer`s)."""

    def __init__(self, scorers: Sequence, sizes: Sequence[int]) -> None:
        self.scorers, self.sizes = list(scorers), list(sizes)
        self.starts = np.cumsum([0, *sizes[:-1]])
        self.image_count = int(sum(sizes))

    def score(self, rows: np.ndarray, captions: Sequence) -> np.ndarray:
        rows = np.asarray(rows)
        image, flipped = rows % self.image_count, rows >= self.image_count
        source = np.searchsorted(self.starts, image, side="right") - 1  # (B,)
        out = np.zeros(len(rows))
        for s, scorer in enumerate(self.scorers):
            chosen = source == s
            if chosen.any():
                local = image[chosen] - self.starts[s] + self.sizes[s] * flipped[chosen]
                picked = [c for c, keep in zip(captions, chosen, strict=True) if keep]
                out[chosen] = scorer.score(local, picked)
        return out


def split_scorer(references, sizes: Sequence[int] | None, reward_end: bool, mirrored: bool):
    """`reward_scorer` for a split, with document frequencies per source when it has several
    (`sizes`: its sources' image counts, in order)."""
    if not sizes or len(sizes) == 1:
        return reward_scorer(references, reward_end, mirrored)
    starts = np.cumsum([0, *sizes])
    parts = [references[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    return SourcedScorer([reward_scorer(p, reward_end, mirrored) for p in parts], sizes)


def mirror_text(caption: str) -> str:
    """The caption of the mirror image: "left" and "right" swapped (written in lower case, as
    CIDEr-D's tokenisation would make them anyway)."""
    pattern = r"\b(" + "|".join(MIRROR_WORDS) + r")\b"
    return re.sub(pattern, lambda m: MIRROR_WORDS[m.group(1).lower()], caption, flags=re.IGNORECASE)


def caption_words(samples: torch.Tensor, itos: Sequence[str], config) -> list[list[str]]:
    """Sampled ids (B, L) -> the words of each caption (what CIDEr-D scores)."""
    return [[itos[t] for t in words_before_end(row, config)] for row in samples.tolist()]


def end_closed(words: list[list[str]], samples: torch.Tensor, end_id: int) -> list[list[str]]:
    """What the end-aware reward scores: each caption's words, with END_WORD after those whose
    sample (B, L) emitted <end> (one cut by the length limit gets none)."""
    ended = (samples == end_id).any(1).tolist()  # (B,)
    return [w + [END_WORD] if e else w for w, e in zip(words, ended, strict=True)]


def scst_batch(
    model,
    net,
    features: torch.Tensor,
    images: np.ndarray,
    scorer,
    itos: Sequence[str],
    samples_per_image: int,
    max_length: int,
    generator: torch.Generator | None = None,
    reward_end: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Sample, reward with CIDEr-D, and return the self-critical loss for one batch of images.

    features (N, ...) on the model's device; images (N,) their rows in `scorer`'s references.
    `net` is the model or its DDP wrapper (the gradient pass goes through it).
    The model is in eval mode throughout (no dropout), so the captions scored are drawn from the
    very distribution whose gradient is taken.
    """
    cfg = model.config
    K = samples_per_image
    model.eval()  # no dropout: the sampled captions and the gradient share one distribution
    samples = sample_captions(model, features, K, max_length, generator=generator)  # (N*K, L)
    words = caption_words(samples, itos, cfg)
    scored = end_closed(words, samples, cfg.end_id) if reward_end else words
    rewards = torch.from_numpy(scorer.score(np.repeat(images, K), scored))  # (N*K,)
    log_probs = sequence_log_probs(net, cfg, features, samples, K)
    loss, _ = self_critical_loss(log_probs, rewards, K)
    stats = {
        "reward": float(rewards.mean()),
        "words": float(np.mean([len(w) for w in words])),
    }
    return loss, stats


def scst_loss(
    share: BatchShare,
    *,
    model,
    net,
    split: CaptionSplit,
    scorer,
    itos: Sequence[str],
    samples_per_image: int,
    max_length: int,
    generator: torch.Generator | None,
    device: torch.device,
    reward_end: bool = False,
) -> Step:
    """The self-critical objective (`rnncap.engine.objectives`): `scst_batch` on this process's
    share of a batch of train images, mirror images (`share.mirror`) included.

    split: the train split; scorer: `reward_scorer` over its references (rows I..2I-1 the mirror
    images' when mirrored); generator: the sampling's random numbers. Stats: the mean reward
    and the mean words per sampled caption.
    """
    features = batch_features(split, share.images, share.mirror)
    # the scorer's rows: image i, or i + I for its mirror image's (left/right) references
    rows = np.array(share.images) + len(split.names) * share.mirror.numpy()
    loss, stats = scst_batch(
        model,
        net,
        features.to(device).float(),
        rows,
        scorer,
        itos,
        samples_per_image,
        max_length,
        generator,
        reward_end,
    )
    return Step(loss, 1, stats)
