"""Training a CaptioningRNN on cached encoder features: one loop for CPU, CUDA and DDP.

`TrainConfig` holds every choice; `train(config)` writes a run folder with the resolved config,
`metrics.jsonl`, `curves.png`, `last/` (resumable, every epoch) and `best/` (highest dev CIDEr).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioner import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import save_model
from rnncap.nn.loss import temporal_softmax_loss
from rnncap.utils.io import atomic_write

TRAIN_STATE = "train_state.pt"
GREEDY = DecodeOptions(beam_size=1)  # dev captions for CIDEr model selection


# --------------------------------------------------------------------------- data
@dataclass
class CaptionSplit:
    """One split in memory: encoder features per image and encoded captions per image."""

    names: list[str]
    features: torch.Tensor  # (I, C, h, w) or (I, C), float16
    captions: list[list[list[int]]]  # per image, its captions as token ids with <start>/<end>
    references: list[list[str]]  # per image, the raw reference captions


def load_split(
    cfg: TrainConfig, split: str, vocab: Vocabulary | None
) -> tuple[CaptionSplit, Vocabulary]:
    """Read the split's captions and its cached features; builds the vocabulary from train."""
    from rnncap.data.datasets import load_dataset
    from rnncap.data.features import FeatureCache

    dataset = load_dataset(cfg.data, cfg.format, split)
    samples = list(dataset)
    if cfg.limit_images:
        samples = samples[: cfg.limit_images]
    if vocab is None:
        vocab = Vocabulary.build((c for s in samples for c in s.captions), cfg.min_count)
    features, names = FeatureCache(cfg.features, cfg.encoder).load_split(samples)
    captions = [
        [_truncate(vocab.encode(c), cfg.max_caption_words) for c in s.captions] for s in samples
    ]
    return CaptionSplit(names, features, captions, [s.captions for s in samples]), vocab


def _truncate(ids: list[int], max_words: int) -> list[int]:
    return ids if len(ids) <= max_words + 2 else ids[: max_words + 1] + [ids[-1]]


def collate(split: CaptionSplit, index: list[int], pad_id: int):
    """Images `index` -> features (B, ...), captions (sum n_i, T+1) padded, counts (B,)."""
    rows = [c for i in index for c in split.captions[i]]
    counts = torch.tensor([len(split.captions[i]) for i in index])
    T = max(len(r) for r in rows)
    captions = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for j, r in enumerate(rows):
        captions[j, : len(r)] = torch.tensor(r)
    return split.features[index], captions, counts


# --------------------------------------------------------------------------- loss
def caption_loss(model, features, captions, counts, attention_reg: float) -> torch.Tensor:
    """Temporal softmax loss (+ the doubly stochastic attention penalty for attn models)."""
    logits, weights = model(features, captions[:, :-1], counts)  # (N, T, V), (N, T, P) | None
    targets = captions[:, 1:]
    loss = temporal_softmax_loss(logits.float(), targets, ignore_index=0)
    if weights is not None and attention_reg > 0:
        mask = (targets != 0).to(weights.dtype)[:, :, None]  # (N, T, 1)
        # Each grid cell should receive, summed over the words, about one unit of attention.
        coverage = (weights * mask).sum(1)  # (N, P)
        loss = loss + attention_reg * ((1.0 - coverage) ** 2).sum(1).mean()
    return loss


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_split(model, vocab, split: CaptionSplit, device, max_images: int, batch: int = 100):
    """Dev loss (teacher forcing) and CIDEr of greedy captions on the first max_images."""
    from rnncap.engine.metrics import score

    model.eval()
    n = len(split.names) if max_images <= 0 else min(max_images, len(split.names))
    total, count = 0.0, 0
    predictions, references = {}, {}
    for start in range(0, n, batch):
        index = list(range(start, min(n, start + batch)))
        features, captions, counts = collate(split, index, vocab.pad_id)
        features, captions = features.to(device).float(), captions.to(device)
        loss = caption_loss(model, features, captions, counts.to(device), 0.0)
        total += float(loss) * captions.shape[0]
        count += captions.shape[0]
        greedy = Captioner(model, vocab, GREEDY).caption_features(features)
        for i, caption in zip(index, greedy, strict=True):
            predictions[split.names[i]] = caption.text
            references[split.names[i]] = split.references[i]
    scores = score(references, predictions, metrics=("CIDEr",))
    return {"dev_loss": total / max(count, 1), "dev_cider": scores["CIDEr"]}


# --------------------------------------------------------------------------- distributed
def _dist_setup(cfg: TrainConfig):
    """(rank, world, device) from torchrun's environment, or a single process."""
    from rnncap.utils.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return rank, world, device
    return 0, 1, resolve_device(cfg.device)


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["dev_loss"] for h in history], "o-", label="dev")
    a.set_xlabel("epoch"), a.set_ylabel("loss per caption"), a.legend()
    b.plot(epochs, [h.get("dev_cider", float("nan")) for h in history], "o-", color="C2")
    b.set_xlabel("epoch"), b.set_ylabel("dev CIDEr (greedy)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def _lr_lambda(cfg: TrainConfig, total_steps: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# --------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> dict:
    """Train, validate every epoch, keep last/ and best/; returns the best epoch's metrics."""
    rank, world, device = _dist_setup(cfg)
    main = rank == 0
    out = Path(cfg.out)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if main else (lambda *a: None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and (out / "last").exists() and not cfg.dry_run:
            raise FileExistsError(
                f"{out} already holds a run (use --resume to continue it, or another --out)"
            )

    resume_state = None
    if cfg.resume:
        if not (out / "last" / TRAIN_STATE).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {out / 'last'}")
        resume_state = torch.load(out / "last" / TRAIN_STATE, weights_only=True)
        vocab = Vocabulary.load(out / "last" / "vocab.json")
    else:
        vocab = None

    train_split, vocab = load_split(cfg, "train", vocab)
    dev_split, _ = load_split(cfg, "dev", vocab)
    if cfg.dry_run:
        train_split = _head(train_split, cfg.batch_images)
        dev_split = _head(dev_split, min(8, len(dev_split.names)))
    log(
        f"train: {len(train_split.names)} images, dev: {len(dev_split.names)} images, "
        f"vocabulary {len(vocab)}"
    )

    feature_dim = train_split.features.shape[1]
    model_cfg = CaptionerConfig(
        encoder=cfg.encoder, feature_dim=feature_dim, cell_type=cfg.cell_type,
        wordvec_dim=cfg.wordvec_dim, hidden_dim=cfg.hidden_dim, vocab_size=len(vocab),
        max_length=cfg.max_length, dropout=cfg.dropout, deep_output=cfg.deep_output,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = CaptioningRNN(model_cfg).to(device)
    steps_per_epoch = math.ceil(len(train_split.names) / (cfg.batch_images * world))
    total_steps = 1 if cfg.dry_run else steps_per_epoch * cfg.epochs
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or name.startswith("embed") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps))
    history: list[dict] = []
    best = {"dev_cider": -1.0, "epoch": 0}
    start_epoch = 1
    if resume_state is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(out / "last" / "model.safetensors")))
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        history = json.loads(resume_state["history"])
        best = json.loads(resume_state["best"])
        start_epoch = int(resume_state["epoch"]) + 1
        torch.set_rng_state(resume_state["rng"])
        log(f"resumed from epoch {start_epoch - 1} in {out}")
    if main:
        (out / "config.json").write_text(
            json.dumps({"train": asdict(cfg), "captioner": model_cfg.to_dict()}, indent=2) + "\n"
        )

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    use_amp = cfg.amp and device.type == "cuda"

    epochs_since_best = 0 if not history else history[-1]["epoch"] - best["epoch"]
    for epoch in range(start_epoch, cfg.epochs + 1):
        if epochs_since_best >= cfg.patience:
            log(f"early stop: dev CIDEr has not improved for {cfg.patience} epochs")
            break
        t0 = time.time()
        model.train()
        order = torch.randperm(
            len(train_split.names), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        )
        batches = [
            order[i : i + cfg.batch_images * world]
            for i in range(0, len(order), cfg.batch_images * world)
        ]
        batches = [b for b in batches if len(b) >= world]  # every process needs an image
        if cfg.dry_run:
            batches = batches[:1]
        running, seen = 0.0, 0
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not (main and cfg.progress),
            unit="batch",
            file=sys.stderr,
        )
        for batch in bar:
            mine = batch[rank::world].tolist()  # this process's share of the global batch
            features, captions, counts = collate(train_split, mine, vocab.pad_id)
            features, captions, counts = (
                features.to(device).float(),
                captions.to(device),
                counts.to(device),
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = caption_loss(
                    ddp_model,
                    features,
                    captions,
                    counts,
                    cfg.attention_reg if cfg.cell_type == "attn" else 0.0,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * captions.shape[0]
            seen += captions.shape[0]
            bar.set_postfix(loss=f"{running / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        record = {
            "epoch": epoch,
            "train_loss": running / max(seen, 1),
            "lr": scheduler.get_last_lr()[0],
        }
        stop = torch.zeros(1)
        if main:
            record.update(
                evaluate_split(
                    model, vocab, dev_split, device, 8 if cfg.dry_run else cfg.eval_images
                )
            )
            record["seconds"] = round(time.time() - t0, 1)
            history.append(record)
            improved = record["dev_cider"] > best["dev_cider"]
            if improved:
                best = dict(record)
                save_model(
                    out / "best", model, vocab, extra={"train": asdict(cfg), "metrics": record}
                )
            epochs_since_best = epoch - best["epoch"]
            _save_last(out, model, vocab, cfg, optimizer, scheduler, epoch, history, best)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            _plot(history, out / "curves.png")
            log(
                f"epoch {epoch}: train loss {record['train_loss']:.3f}  "
                f"dev loss {record['dev_loss']:.3f}  dev CIDEr {record['dev_cider']:.3f}"
                f"{'  (best)' if improved else ''}  {record['seconds']:.0f}s"
            )
            stop[0] = epochs_since_best
        if world > 1:
            dist.broadcast(stop, 0)
            epochs_since_best = int(stop[0])
        if cfg.dry_run:
            break
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return best


def _head(split: CaptionSplit, n: int) -> CaptionSplit:
    return CaptionSplit(
        split.names[:n], split.features[:n], split.captions[:n], split.references[:n]
    )


def _save_last(out, model, vocab, cfg, optimizer, scheduler, epoch, history, best) -> None:
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
        "best": json.dumps(best),
        "rng": torch.get_rng_state(),
    }
    save_model(
        out / "last", model, vocab, extra={"train": asdict(cfg), "epoch": epoch},
        files={TRAIN_STATE: lambda path: torch.save(state, path)},
    )  # fmt: skip
