"""Training a CaptioningRNN on cached encoder features: one loop for CPU, CUDA and DDP.

`TrainConfig` holds every choice; `train(config)` writes a run folder with the resolved config,
`metrics.jsonl`, `curves.png`, `last/` (resumable, every epoch) and `best/` (highest dev CIDEr).
The parts, in order: set up the run (`_start`, resuming from `last/`), build the model and its
optimiser (`_optimizer`), then per epoch `_train_epoch`, `_end_epoch` (dev loss and CIDEr,
checkpoints, curves) and the early-stopping check (`_should_stop`).
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from rnncap.data.vocab import Vocabulary
from rnncap.decode.beam import DecodeOptions
from rnncap.decode.captioner import Captioner
from rnncap.engine.cider import CiderD, cider_d
from rnncap.engine.loop import train_epoch
from rnncap.engine.model_init import build_model, init_model
from rnncap.engine.objectives import OBJECTIVES, batch_loss
from rnncap.engine.optimizer import dist_setup, lr_lambda, optimizer
from rnncap.engine.resume import TRAIN_STATE, Checkpoint, load_checkpoint, prepare_run_folder
from rnncap.engine.scst import split_scorer
from rnncap.engine.sources import TextBatches, epoch_order, expected_images
from rnncap.engine.splits import (
    CaptionSplit,
    collate,
    head,
    left_right_swap,
    load_split,
    load_text,
    mirror_masks,
)
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import CaptioningRNN
from rnncap.models.folder import save_model
from rnncap.utils.io import atomic_write_text
from rnncap.utils.plotting import plot_training_curves

GREEDY = DecodeOptions(beam_size=1)  # dev captions for CIDEr model selection


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
    text: TextBatches | None = None  # xe: caption groups without photos joining each batch

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

    out = Path(cfg.out)
    created = not out.exists()
    try:
        with cuda_math(tf32=cfg.tf32, deterministic=cfg.deterministic):
            return _train(cfg)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no folder
        raise


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
    rank, world, device = dist_setup(cfg)
    out = Path(cfg.out)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if rank == 0 else (lambda *a: None)
    if rank == 0:
        prepare_run_folder(out, cfg.resume, cfg.dry_run)
    if world > 1:
        dist.barrier()  # the other ranks read last/ once it is back in place
    checkpoint = load_checkpoint(cfg) if cfg.resume else None  # every file checked first
    vocab = checkpoint.vocab if checkpoint is not None else None
    start_model = None
    if cfg.init:
        start_model, vocab = init_model(cfg, vocab)
    train_split, vocab = load_split(cfg, "train", vocab, mirrored=cfg.mirror > 0)
    dev_split, _ = load_split(cfg, "dev", vocab)
    if cfg.dry_run:
        train_split = head(train_split, cfg.batch_images)
        dev_split = head(dev_split, min(8, len(dev_split.names)))
    log(
        f"train: {len(train_split.names)} images, dev: {len(dev_split.names)} images, "
        f"vocabulary {len(vocab)}"
    )
    model = build_model(cfg, train_split.features.shape[1], vocab, device, start_model)
    run = make_run(cfg, model, vocab, train_split, dev_split, device, rank, world, log)
    if checkpoint is not None:
        _restore(run, checkpoint)
    if run.main:
        config = {"train": asdict(cfg), "captioner": model.config.to_dict()}
        atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    if world > 1:
        ids = [device] if device.type == "cuda" else None
        run.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return run


def make_run(
    cfg: TrainConfig,
    model: CaptioningRNN,
    vocab: Vocabulary,
    train_split: CaptionSplit,
    dev_split: CaptionSplit,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    log=None,
) -> _Run:
    """A run ready for `run_epoch`: the model on `device`, its AdamW, the schedule over
    cfg.epochs of train_split, the caption text (xe) or the CIDEr-D scorer (scst). `train` makes
    one from the data set; `benchmarks/train_throughput.py` from features in memory."""
    log = log or (lambda *a: None)
    run = _Run(
        cfg,
        Path(cfg.out),
        rank,
        world,
        device,
        log,
        Captioner(model, vocab, GREEDY),
        train_split,
        dev_split,
    )
    images = expected_images(train_split.weights, len(train_split.names))
    steps_per_epoch = math.ceil(images / (cfg.batch_images * world))
    total_steps = 1 if cfg.dry_run else steps_per_epoch * cfg.epochs
    run.optimizer = optimizer(cfg, model)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lr_lambda(cfg, total_steps))
    if cfg.text_data and cfg.text_ratio > 0 and cfg.objective == "xe":
        run.text = TextBatches(load_text(cfg, vocab), cfg.text_ratio, cfg.seed)
        log(f"caption text: {len(run.text.groups)} groups, {cfg.text_ratio} per photo")
    if cfg.objective == "scst":
        run.scorer = split_scorer(
            train_split.references, train_split.sources, cfg.reward_end, cfg.mirror > 0
        )
    run.net = model
    return run


def _restore(run: _Run, checkpoint: Checkpoint) -> None:
    """Continue from `last/`: weights, optimiser, schedule, history and the RNG."""
    state = checkpoint.state
    run.model.load_state_dict(checkpoint.weights)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history = json.loads(state["history"])
    run.best = json.loads(state["best"])
    run.start_epoch = int(state["epoch"]) + 1
    if run.main:  # the epochs of the checkpoint, none twice, none missing
        lines = "".join(json.dumps(record) + "\n" for record in run.history)
        atomic_write_text(run.out / "metrics.jsonl", lines)
    torch.set_rng_state(state["rng"])
    if run.device.type == "cuda" and "cuda_rng" in state:  # dropout on CUDA draws from it
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.log(f"resumed from epoch {run.start_epoch - 1} in {run.out}")


def epoch_batches(run: _Run, epoch: int) -> list[torch.Tensor]:
    """The epoch's global batches of image indices (seeded by epoch, the same in every process)."""
    cfg, world = run.cfg, run.world
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = epoch_order(run.train_split.weights, len(run.train_split.names), generator)
    size = cfg.batch_images * world
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    batches = [b for b in batches if len(b) >= world]  # every process needs an image
    return batches[:1] if cfg.dry_run else batches


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the train split with the run's objective."""
    return run_epoch(run, epoch_batches(run, epoch), epoch)


def run_epoch(run: _Run, batches: list[torch.Tensor], epoch: int) -> dict:
    """The run's objective over the image `batches` of its train split -> the epoch's record:
    {"epoch", "train_loss", "lr"} (+ "train_reward", "train_words": scst)."""
    cfg = run.cfg
    mirrors = mirror_masks(batches, cfg.mirror, cfg.seed, epoch)  # (B,) each: shown mirrored
    objective = partial(OBJECTIVES[cfg.objective], **_objective_arguments(run, epoch))
    record = train_epoch(
        objective,
        batches,
        mirrors,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        parameters=run.model.parameters(),
        clip=cfg.clip,
        rank=run.rank,
        world=run.world,
        desc=f"{cfg.objective} {epoch}/{cfg.epochs}",
        progress=run.main and cfg.progress,
    )
    return {"epoch": epoch, **record}


def _objective_arguments(run: _Run, epoch: int) -> dict:
    """The keyword arguments of the objective's loss function for this epoch."""
    cfg = run.cfg
    common = {"net": run.net, "split": run.train_split, "device": run.device}
    if cfg.objective == "scst":
        # sampling seeded by (seed, epoch, process): a resumed run repeats an uninterrupted one
        seed = 10_000 + cfg.seed * 1000 + epoch + 100_000 * run.rank
        return dict(
            common,
            model=run.model,
            scorer=run.scorer,
            itos=run.vocab.itos,
            samples_per_image=cfg.samples_per_image,
            max_length=cfg.max_caption_words,
            generator=torch.Generator().manual_seed(seed),
            reward_end=cfg.reward_end,
        )
    text = None
    if run.text is not None:
        run.text.start_epoch(epoch)

        def text(photos: int) -> list:  # every process takes the same groups, then its share
            return run.text.take(photos)[run.rank :: run.world]

    return dict(
        common,
        pad_id=run.vocab.pad_id,
        swap=left_right_swap(run.vocab),
        attention_reg=cfg.attention_reg if cfg.cell_type == "attn" else 0.0,
        amp=cfg.amp and run.device.type == "cuda",
        text=text,
    )


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


def _serialized(state: dict) -> bytes:
    """torch.save into memory: written with write_bytes, a full disk is an OSError with its
    errno, where torch's own file writer reports 'unexpected pos'."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


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
        run.out / "last",
        run.model,
        run.vocab,
        extra={"train": asdict(run.cfg), "epoch": epoch},
        files={TRAIN_STATE: lambda path: path.write_bytes(_serialized(state))},
    )
