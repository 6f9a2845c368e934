"""Training the caption language model: batches, perplexity, sampling, the Adam loop, save/load.

Every cell (rnn, lstm, torch-lstm) shares this loop, data, sizes and schedule, so their
perplexities are comparable.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnncap.data.vocab import Vocabulary
from rnncap.models.lm import LanguageModel, LMConfig
from rnncap.utils.io import atomic_write, atomic_write_text


@dataclass
class LMTrainConfig:
    """How the language model is trained (identical for every cell when comparing them)."""

    epochs: int = 3
    batch_size: int = 64  # captions per batch
    lr: float = 2e-3  # Adam learning rate, decayed by half each epoch
    clip: float = 5.0  # gradient-norm clipping threshold
    min_count: int = 5  # words seen fewer times in the train split become <unk>
    seed: int = 0
    model: LMConfig = field(default_factory=LMConfig)


def encode_captions(captions: Sequence[str], vocab: Vocabulary) -> list[list[int]]:
    """Each caption as `<start> words <end>` ids; empty captions are dropped."""
    return [ids for ids in (vocab.encode(c) for c in captions) if len(ids) > 2]


def batches(
    sequences: Sequence[list[int]], batch_size: int, pad_id: int, rng: random.Random | None = None
) -> Iterator[Tensor]:
    """Padded batches (N, T) of token ids; shuffled when rng is given."""
    order = list(range(len(sequences)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [sequences[i] for i in order[start : start + batch_size]]
        batch = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)
        for row, ids in enumerate(chunk):
            batch[row, : len(ids)] = torch.tensor(ids)
        yield batch


def batch_loss(model: LanguageModel, batch: Tensor, pad_id: int) -> tuple[Tensor, int]:
    """Mean next-word cross-entropy over the non-pad targets of batch (N, T), and their count."""
    logits = model(batch[:, :-1])  # (N, T-1, V)
    targets = batch[:, 1:]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)
    return loss, int((targets != pad_id).sum())


@torch.no_grad()
def perplexity(
    model: LanguageModel, sequences: Sequence[list[int]], pad_id: int, batch_size: int = 256
) -> float:
    """exp(mean cross-entropy per predicted word, `<end>` included) over sequences."""
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches(sequences, batch_size, pad_id):
        loss, n = batch_loss(model, batch.to(device), pad_id)
        total += loss.item() * n
        count += n
    model.train(was_training)
    return math.exp(total / max(count, 1))


@torch.no_grad()
def sample(
    model: LanguageModel,
    vocab: Vocabulary,
    k: int,
    max_length: int = 30,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """k sentences drawn word by word from the model (stops at `<end>` or max_length words)."""
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    tokens = torch.full((k,), vocab.start_id, dtype=torch.long, device=device)
    state = model.init_state(k)
    words = []
    for _ in range(max_length):
        logits, state = model.step(tokens, state)  # (k, V)
        logits[:, [vocab.pad_id, vocab.start_id]] = -math.inf  # never emitted
        probs = torch.softmax(logits.float() / temperature, dim=1).cpu()
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (k,)
        words.append(tokens)
        tokens = tokens.to(device)
    ids = torch.stack(words, dim=1)  # (k, max_length)
    model.train(was_training)
    return [vocab.decode(row.tolist()) for row in ids]


@dataclass
class History:
    """What a training run measured: per-step train loss, per-epoch validation perplexity."""

    step_loss: list[float] = field(default_factory=list)
    epoch_train_ppl: list[float] = field(default_factory=list)
    epoch_val_ppl: list[float] = field(default_factory=list)


def train(
    model: LanguageModel,
    train_seqs: Sequence[list[int]],
    val_seqs: Sequence[list[int]],
    config: LMTrainConfig,
    pad_id: int,
    max_batches: int | None = None,
    progress: bool = True,
) -> History:
    """Adam with gradient clipping; validation perplexity after every epoch."""
    from tqdm import tqdm

    device = model.head.weight.device
    rng = random.Random(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = History()
    n_batches = math.ceil(len(train_seqs) / config.batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    model.train()
    for epoch in range(1, config.epochs + 1):
        total, count = 0.0, 0
        bar = tqdm(
            batches(train_seqs, config.batch_size, pad_id, rng),
            total=n_batches,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for b, batch in enumerate(bar):
            if b >= n_batches:
                break
            loss, n = batch_loss(model, batch.to(device), pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            history.step_loss.append(loss.item())
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        scheduler.step()
        history.epoch_train_ppl.append(math.exp(total / max(count, 1)))
        history.epoch_val_ppl.append(perplexity(model, val_seqs, pad_id))
        if progress:
            print(
                f"epoch {epoch}: train perplexity {history.epoch_train_ppl[-1]:.2f}, "
                f"validation perplexity {history.epoch_val_ppl[-1]:.2f}",
                flush=True,
            )
    return history


def save(
    model: LanguageModel, vocab: Vocabulary, config: LMTrainConfig, history: History, out: Path
) -> None:
    """model.safetensors, config.json (model + training config), vocab.json, history.json."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: tmp.write_bytes(save(state)))
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    atomic_write(out / "vocab.json", vocab.save)
    atomic_write_text(out / "history.json", json.dumps(asdict(history)) + "\n")


def load(folder: Path, device: torch.device) -> tuple[LanguageModel, Vocabulary]:
    """Rebuild a model saved by `save` (see `rnncap.models.lm.load_language_model`)."""
    from rnncap.models.lm import load_language_model

    return load_language_model(folder, device)
