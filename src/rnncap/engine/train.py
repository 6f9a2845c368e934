"""Training a CaptioningRNN on cached encoder features: one loop for CPU, CUDA and DDP.

`TrainConfig` holds every choice; `train(config)` writes a run folder with the resolved config,
`metrics.jsonl`, `curves.png`, `last/` (resumable, every epoch) and `best/` (highest dev CIDEr).
The parts, in order: set up the run (`_start`, resuming from `last/`), build the model and its
optimiser (`_optimizer`), then per epoch `_train_epoch`, `_end_epoch` (dev loss and CIDEr,
checkpoints, curves) and the early-stopping check (`_should_stop`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.engine.cider import CiderD, cider_d
from rnncap.engine.resume import TRAIN_STATE, Checkpoint, load_checkpoint
from rnncap.engine.scst import reward_scorer, scst_epoch
from rnncap.engine.splits import (
    CaptionSplit,
    collate,
    head,
    left_right_swap,
    load_split,
    mirror_masks,
)
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioner import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import load_model, save_model
from rnncap.nn.loss import captioning_loss
from rnncap.utils.plotting import plot_training_curves

GREEDY = DecodeOptions(beam_size=1)  # dev captions for CIDEr model selection


# --------------------------------------------------------------------------- loss
def batch_loss(net, features, captions, counts, attention_reg: float) -> torch.Tensor:
    """Teacher-forced `captioning_loss` of one batch; `net` may be the DDP-wrapped model."""
    logits, weights = net(features, captions[:, :-1], counts)  # (N, T, V), (N, T, P) | None
    return captioning_loss(logits, captions[:, 1:], weights, attention_reg, ignore_index=0)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_split(captioner: Captioner, split: CaptionSplit, max_images: int, batch: int = 100):
    """Dev loss (teacher forcing) and CIDEr-D of greedy captions on the first max_images.

    CIDEr-D is computed in-process (`rnncap.engine.cider`, equal to pycocoevalcap's): training
    needs no Java.
    """
    model, pad_id = captioner.model, captioner.vocab.pad_id
    model.eval()
    n = len(split.names) if max_images <= 0 else min(max_images, len(split.names))
    total, count = 0.0, 0
    predictions, references = {}, {}
    for start in range(0, n, batch):
        index = list(range(start, min(n, start + batch)))
        features, captions, counts = collate(split, index, pad_id)
        features, captions = features.to(captioner.device).float(), captions.to(captioner.device)
        loss = batch_loss(model, features, captions, counts.to(captioner.device), 0.0)
        total += float(loss) * captions.shape[0]
        count += captions.shape[0]
        for i, caption in zip(index, captioner.caption_features(features, GREEDY), strict=True):
            predictions[split.names[i]] = caption.text
            references[split.names[i]] = split.references[i]
    return {"dev_loss": total / max(count, 1), "dev_cider": cider_d(references, predictions)}


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


def _lr_lambda(cfg: TrainConfig, total_steps: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# --------------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Everything one training run carries from epoch to epoch."""

    cfg: TrainConfig
    out: Path
    rank: int
    world: int
    device: torch.device
    log: Callable[..., None]
    captioner: Captioner  # the model and vocabulary; dev captions go through it
    train_split: CaptionSplit
    dev_split: CaptionSplit
    net: torch.nn.Module = None  # the model, DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer = None
    scheduler: torch.optim.lr_scheduler.LRScheduler = None
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"dev_cider": -1.0, "epoch": 0})
    start_epoch: int = 1
    scorer: CiderD | None = None  # scst: CIDEr-D against the train references

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def model(self) -> CaptioningRNN:
        return self.captioner.model

    @property
    def vocab(self) -> Vocabulary:
        return self.captioner.vocab


def train(cfg: TrainConfig) -> dict:
    """Train, validate every epoch, keep last/ and best/; returns the best epoch's metrics."""
    from rnncap.utils.device import cuda_math

    with cuda_math(tf32=cfg.tf32, deterministic=cfg.deterministic):
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    run = _start(cfg)
    epochs_since_best = 0 if not run.history else run.history[-1]["epoch"] - run.best["epoch"]
    for epoch in range(run.start_epoch, cfg.epochs + 1):
        if _should_stop(run, epochs_since_best):
            break
        t0 = time.time()
        record = _train_epoch(run, epoch)
        if run.main:
            epochs_since_best = _end_epoch(run, record, t0)
        if run.world > 1:  # every process learns the main one's count
            stop = torch.tensor([float(epochs_since_best)])
            dist.broadcast(stop, 0)
            epochs_since_best = int(stop[0])
        if cfg.dry_run:
            break
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return run.best


def _start(cfg: TrainConfig) -> _Run:
    """Processes, run folder, data, model, optimiser; the saved state when resuming."""
    rank, world, device = _dist_setup(cfg)
    out = Path(cfg.out)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if rank == 0 else (lambda *a: None)
    if rank == 0:
        _check_out(cfg, out)
    checkpoint = load_checkpoint(cfg) if cfg.resume else None  # every file checked first
    vocab = checkpoint.vocab if checkpoint is not None else None
    init_model = None
    if cfg.init:
        init_model, init_vocab = load_model(cfg.init)
        if init_model.config.encoder != cfg.encoder:
            raise ValueError(
                f"--init {cfg.init}: trained on {init_model.config.encoder} features, "
                f"not {cfg.encoder} (pass --encoder {init_model.config.encoder})"
            )
        vocab = vocab or init_vocab
    train_split, vocab = load_split(cfg, "train", vocab, mirrored=cfg.mirror > 0)
    dev_split, _ = load_split(cfg, "dev", vocab)
    if cfg.dry_run:
        train_split = head(train_split, cfg.batch_images)
        dev_split = head(dev_split, min(8, len(dev_split.names)))
    log(
        f"train: {len(train_split.names)} images, dev: {len(dev_split.names)} images, "
        f"vocabulary {len(vocab)}"
    )
    model = _build_model(cfg, train_split.features.shape[1], vocab, device, init_model)
    run = make_run(cfg, model, vocab, train_split, dev_split, device, rank, world, log)
    if checkpoint is not None:
        _restore(run, checkpoint)
    if run.main:
        config = {"train": asdict(cfg), "captioner": model.config.to_dict()}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if world > 1:
        ids = [device] if device.type == "cuda" else None
        run.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return run


def make_run(
    cfg: TrainConfig, model: CaptioningRNN, vocab: Vocabulary, train_split: CaptionSplit,
    dev_split: CaptionSplit, device: torch.device, rank: int = 0, world: int = 1, log=None,
) -> _Run:  # fmt: skip
    """A run ready for `xe_epoch` / `scst_epoch`: the model on `device`, its AdamW, the schedule
    over cfg.epochs of train_split and (scst) the CIDEr-D scorer of its references. `train`
    makes one from the data set; `benchmarks/train_throughput.py` from features in memory."""
    log = log or (lambda *a: None)
    run = _Run(cfg, Path(cfg.out), rank, world, device, log, Captioner(model, vocab, GREEDY),
               train_split, dev_split)  # fmt: skip
    steps_per_epoch = math.ceil(len(train_split.names) / (cfg.batch_images * world))
    total_steps = 1 if cfg.dry_run else steps_per_epoch * cfg.epochs
    run.optimizer = _optimizer(cfg, model)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, _lr_lambda(cfg, total_steps))
    if cfg.objective == "scst":
        run.scorer = reward_scorer(train_split.references, cfg.reward_end, cfg.mirror > 0)
    run.net = model
    return run


def _check_out(cfg: TrainConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.resume and (out / "last").exists() and not cfg.dry_run:
        raise FileExistsError(
            f"{out} already holds a run (use --resume to continue it, or another --out)"
        )


def _build_model(
    cfg: TrainConfig, feature_dim: int, vocab: Vocabulary, device, init: CaptioningRNN | None
) -> CaptioningRNN:
    """A new model from the flags, or the --init model (its own sizes, cell type and weights)."""
    if init is not None:
        if init.config.feature_dim != feature_dim:
            raise ValueError(
                f"--init {cfg.init}: expects {init.config.feature_dim}-channel features, "
                f"the cache holds {feature_dim}"
            )
        if len(vocab) != init.config.vocab_size:
            raise ValueError(f"--init {cfg.init}: its vocabulary differs from this run's")
        return init.to(device)
    model_cfg = CaptionerConfig(
        encoder=cfg.encoder, feature_dim=feature_dim, cell_type=cfg.cell_type,
        wordvec_dim=cfg.wordvec_dim, hidden_dim=cfg.hidden_dim, vocab_size=len(vocab),
        max_length=cfg.max_length, dropout=cfg.dropout, deep_output=cfg.deep_output,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    return CaptioningRNN(model_cfg).to(device)


def _optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on biases, gains or the word embedding)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or name.startswith("embed") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _restore(run: _Run, checkpoint: Checkpoint) -> None:
    """Continue from `last/`: weights, optimiser, schedule, history and the RNG."""
    state = checkpoint.state
    run.model.load_state_dict(checkpoint.weights)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history = json.loads(state["history"])
    run.best = json.loads(state["best"])
    run.start_epoch = int(state["epoch"]) + 1
    torch.set_rng_state(state["rng"])
    if run.device.type == "cuda" and "cuda_rng" in state:  # dropout on CUDA draws from it
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.log(f"resumed from epoch {run.start_epoch - 1} in {run.out}")


def epoch_batches(run: _Run, epoch: int) -> list[torch.Tensor]:
    """The epoch's global batches of image indices (seeded by epoch, the same in every process)."""
    cfg, world = run.cfg, run.world
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = torch.randperm(len(run.train_split.names), generator=generator)
    size = cfg.batch_images * world
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    batches = [b for b in batches if len(b) >= world]  # every process needs an image
    return batches[:1] if cfg.dry_run else batches


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the train split -> {"epoch", "train_loss", "lr"} (+ "train_reward": scst)."""
    epoch_step = scst_epoch if run.cfg.objective == "scst" else xe_epoch
    return epoch_step(run, epoch_batches(run, epoch), epoch)


def xe_epoch(run: _Run, batches: list[torch.Tensor], epoch: int) -> dict:
    """One cross-entropy (teacher forcing) pass over the image `batches` of `run`'s train split
    -> {"epoch", "train_loss", "lr"}."""
    cfg, device = run.cfg, run.device
    use_amp = cfg.amp and device.type == "cuda"
    reg = cfg.attention_reg if cfg.cell_type == "attn" else 0.0
    run.model.train()
    running, seen = 0.0, 0
    mirrors = mirror_masks(batches, cfg.mirror, cfg.seed, epoch)  # (B,) each: shown mirrored
    swap = left_right_swap(run.vocab)
    bar = tqdm(zip(batches, mirrors, strict=True), total=len(batches),
               desc=f"epoch {epoch}/{cfg.epochs}", disable=not (run.main and cfg.progress),
               unit="batch", file=sys.stderr)  # fmt: skip
    for batch, mirror in bar:
        mine = batch[run.rank :: run.world].tolist()  # this process's share of the global batch
        features, captions, counts = collate(run.train_split, mine, run.vocab.pad_id,
                                             mirror[run.rank :: run.world], swap)  # fmt: skip
        features, captions = features.to(device).float(), captions.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = batch_loss(run.net, features, captions, counts.to(device), reg)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
        run.optimizer.step()
        run.scheduler.step()
        running += float(loss.detach()) * captions.shape[0]
        seen += captions.shape[0]
        bar.set_postfix(loss=f"{running / seen:.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
    lr = run.scheduler.get_last_lr()[0]
    return {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": lr}


def _end_epoch(run: _Run, record: dict, t0: float) -> int:
    """Main process: dev scores, best/ and last/ checkpoints, metrics.jsonl, curves.png.

    Returns the number of epochs since the best one.
    """
    cfg, epoch = run.cfg, record["epoch"]
    dev_images = 8 if cfg.dry_run else cfg.eval_images
    record.update(evaluate_split(run.captioner, run.dev_split, dev_images))
    reward = f"  reward {record['train_reward']:.3f}" if "train_reward" in record else ""
    record["seconds"] = round(time.time() - t0, 1)
    run.history.append(record)
    improved = record["dev_cider"] > run.best["dev_cider"]
    if improved:
        run.best = dict(record)
        extra = {"train": asdict(cfg), "metrics": record}
        save_model(run.out / "best", run.model, run.vocab, extra=extra)
    _save_last(run, epoch)
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    plot_training_curves(run.history, run.out / "curves.png")
    run.log(
        f"epoch {epoch}: train loss {record['train_loss']:.3f}{reward}  "
        f"dev loss {record['dev_loss']:.3f}  dev CIDEr {record['dev_cider']:.3f}"
        f"{'  (best)' if improved else ''}  {record['seconds']:.0f}s"
    )
    return epoch - run.best["epoch"]


def _should_stop(run: _Run, epochs_since_best: int) -> bool:
    """Early stopping: dev CIDEr has not improved for `patience` epochs."""
    if epochs_since_best >= run.cfg.patience:
        run.log(f"early stop: dev CIDEr has not improved for {run.cfg.patience} epochs")
        return True
    return False


def _save_last(run: _Run, epoch: int) -> None:
    """last/: the model folder plus the training state, written together atomically."""
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": epoch,
        "history": json.dumps(run.history),
        "best": json.dumps(run.best),
        "rng": torch.get_rng_state(),
    }
    if run.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(run.device)
    save_model(
        run.out / "last", run.model, run.vocab, extra={"train": asdict(run.cfg), "epoch": epoch},
        files={TRAIN_STATE: lambda path: torch.save(state, path)},
    )  # fmt: skip
