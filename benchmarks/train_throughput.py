"""Training throughput: photos/s and minutes per epoch of cross-entropy and self-critical training
on a feature cache the size of COCO's Karpathy train split (113,287 photos, 5 captions each).

The split is made in memory by repeating real cached features and captions (--data with
--features: the train split of a Flickr8k-layout folder and its `rnncap features` cache) or, if
there are none, random features of the encoder's grid (1280 x 7 x 7 for EfficientNet-Lite0) with
random captions. Row i of the big split is base image i mod n, so no 14 GB tensor is built; a
batch gathers and collates its rows as training does. Each objective runs through the training
loop's own epoch function (`rnncap.engine.train.run_epoch`, either objective)
over a fixed number of batches after a warm-up; minutes per epoch are extrapolated from those
steps (stated in the table). The self-critical reward is CIDEr-D against the base images'
references (rows taken mod n): the same work per sampled caption as over the whole split. The
model is untrained, so its sampled captions run to the length limit: the slowest case.
With --amp, cross-entropy is timed in float32 (the reference) and under bfloat16 autocast (CUDA;
self-critical training runs in float32 either way). Last, a short run from the same seed on the
CPU and on --device shows whether the two loss curves match.

Usage: python benchmarks/train_throughput.py [--device cuda] [--amp] [--images 113287]
           [--steps 40] [--scst-steps 10] [--data DIR --features CACHE]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch

from _timing import timed
from rnncap.data.vocab import Vocabulary
from rnncap.engine.scst import reward_scorer
from rnncap.engine.splits import CaptionSplit, load_split
from rnncap.engine.train import epoch_batches, make_run, run_epoch
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN

KARPATHY_TRAIN = 113_287  # COCO photos in the Karpathy train split (with restval)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--amp", action="store_true", help="also time bfloat16 autocast (CUDA)")
    p.add_argument("--images", type=int, default=KARPATHY_TRAIN, help="photos per epoch")
    p.add_argument("--base-images", type=int, default=1000, help="distinct photos repeated")
    p.add_argument("--steps", type=int, default=40, help="timed cross-entropy batches")
    p.add_argument("--scst-steps", type=int, default=10, help="timed self-critical batches")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before each timing")
    p.add_argument("--batch-images", type=int, default=TrainConfig.batch_images)
    p.add_argument("--cell", default=TrainConfig.cell_type, choices=("rnn", "lstm", "attn"))
    p.add_argument("--hidden-dim", type=int, default=TrainConfig.hidden_dim)
    p.add_argument("--wordvec-dim", type=int, default=TrainConfig.wordvec_dim)
    p.add_argument("--data", default=None, help="Flickr8k-layout folder for real features")
    p.add_argument("--features", default=None, help="its feature cache (`rnncap features`)")
    p.add_argument("--grid", default="1280,7,7", help="random features' shape (default 1280,7,7)")
    p.add_argument("--curve-steps", type=int, default=12, help="batches of the CPU-vs-device run")
    return p.parse_args()


class RepeatedFeatures:
    """(rows, ...) features whose row i is base[i mod n]; indexing gathers a (B, ...) tensor."""

    def __init__(self, base: torch.Tensor, rows: int) -> None:
        self.base, self.rows = base, rows
        self.shape = torch.Size((rows, *base.shape[1:]))

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index) -> torch.Tensor:
        return self.base[torch.as_tensor(index) % len(self.base)]


class ModuloScorer:
    """A CIDEr-D scorer of n images answering for row i with image i mod n."""

    def __init__(self, scorer, n: int) -> None:
        self.scorer, self.n = scorer, n
        self.image_count = n

    def score(self, rows, captions) -> np.ndarray:
        return self.scorer.score(np.asarray(rows) % self.n, captions)


def base_split(args, cfg: TrainConfig) -> tuple[CaptionSplit, Vocabulary, str]:
    """Real cached features and captions when there are some, else random ones."""
    if args.data and args.features:
        try:
            split, vocab = load_split(cfg, "train", None)
            n = args.base_images
            split = CaptionSplit(
                split.names[:n], split.features[:n], split.captions[:n], split.references[:n]
            )
            return split, vocab, f"real features of {len(split.names)} cached photos"
        except (OSError, KeyError, ValueError) as error:
            print(f"note: no cached features ({error}); random ones instead", file=sys.stderr)
    generator = torch.Generator().manual_seed(0)
    words = [f"w{k}" for k in range(2000)]
    vocab = Vocabulary.build(words)
    n = args.base_images
    grid = [int(x) for x in args.grid.split(",")]
    features = torch.randn((n, *grid), generator=generator).to(torch.float16)
    references = [
        [
            " ".join(
                words[int(w)]
                for w in torch.randint(len(words), (int(length),), generator=generator)
            )
            for length in torch.randint(8, 17, (5,), generator=generator)
        ]
        for _ in range(n)
    ]
    captions = [[vocab.encode(c) for c in refs] for refs in references]
    names = [f"photo{k}" for k in range(n)]
    return CaptionSplit(names, features, captions, references), vocab, "random features"


def big_split(base: CaptionSplit, rows: int) -> CaptionSplit:
    n = len(base.names)
    return CaptionSplit(
        [f"{i}" for i in range(rows)],
        RepeatedFeatures(base.features, rows),
        [base.captions[i % n] for i in range(rows)],
        [base.references[i % n] for i in range(rows)],
    )


# self-critical training asks for a starting model; the throughput is that of an untrained one,
# built here, so the name is never loaded
UNTRAINED = "(untrained model)"


def new_model(cfg: TrainConfig, base: CaptionSplit, vocab: Vocabulary, dropout: float):
    torch.manual_seed(cfg.seed)
    return CaptioningRNN(
        CaptionerConfig(
            encoder=cfg.encoder,
            feature_dim=base.features.shape[1],
            cell_type=cfg.cell_type,
            wordvec_dim=cfg.wordvec_dim,
            hidden_dim=cfg.hidden_dim,
            vocab_size=len(vocab),
            max_length=cfg.max_length,
            dropout=dropout,
        )
    )


def measure(cfg, base, vocab, split, device, steps: int, warmup: int) -> float:
    """Seconds of `steps` batches of cfg.objective (after `warmup` batches) on `split`."""
    model = new_model(cfg, base, vocab, cfg.dropout).to(device)
    run = make_run(dataclasses.replace(cfg, objective="xe"), model, vocab, split, split, device)
    if cfg.objective == "scst":  # the scorer of the base references, rows taken mod n
        run.cfg = cfg
        run.scorer = ModuloScorer(reward_scorer(base.references), len(base.names))
    batches = epoch_batches(run, 1)
    run_epoch(run, batches[:warmup], 1)
    return timed(lambda: run_epoch(run, batches[warmup : warmup + steps], 1), device)


def loss_curves(cfg, base, vocab, device, steps: int) -> tuple[list[float], list[float]]:
    """Cross-entropy per batch from the same seed and batches, on the CPU and on `device`
    (float32, no dropout)."""
    cfg = dataclasses.replace(cfg, amp=False, batch_images=min(8, cfg.batch_images))
    curves = []
    for where in (torch.device("cpu"), device):
        model = new_model(cfg, base, vocab, 0.0).to(where)
        run = make_run(cfg, model, vocab, base, base, where)
        batches = epoch_batches(run, 1)[:steps]
        curves.append([run_epoch(run, [batch], 1)["train_loss"] for batch in batches])
    return curves[0], curves[1]


def main() -> int:
    args = parse_args()
    device = torch.device(args.device)
    cfg = TrainConfig(
        data=args.data or "",
        features=args.features or "",
        cell_type=args.cell,
        hidden_dim=args.hidden_dim,
        wordvec_dim=args.wordvec_dim,
        batch_images=args.batch_images,
        amp=False,
        progress=False,
        max_caption_words=TrainConfig.max_caption_words,
        epochs=1,
    )
    base, vocab, source = base_split(args, cfg)
    split = big_split(base, args.images)
    variants = [("xe", "float32", cfg, args.steps)]
    if args.amp:
        variants.append(("xe", "bf16 autocast", dataclasses.replace(cfg, amp=True), args.steps))
    variants.append(
        (
            "scst",
            "float32",
            dataclasses.replace(cfg, objective="scst", init=UNTRAINED),
            args.scst_steps,
        )
    )
    rows = []
    for objective, precision, variant, steps in variants:
        seconds = measure(variant, base, vocab, split, device, steps, args.warmup)
        rows.append((objective, precision, steps, seconds, steps * cfg.batch_images / seconds))
    report(args, cfg, source, device, rows)
    cpu, other = loss_curves(cfg, base, vocab, device, args.curve_steps)
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu, other, strict=True))
    verdict = "match" if worst < 1e-3 else "DIFFER"
    print(
        f"loss curve, {len(cpu)} batches of {min(8, cfg.batch_images)} photos from one seed, "
        f"cpu vs {device}: {verdict} (largest relative difference {worst:.1e}; first "
        f"{cpu[0]:.4f} / {other[0]:.4f}, last {cpu[-1]:.4f} / {other[-1]:.4f})"
    )
    return 0


def report(args, cfg: TrainConfig, source: str, device, rows) -> None:
    print(
        f"training throughput: {cfg.cell_type} H={cfg.hidden_dim} W={cfg.wordvec_dim}, "
        f"{cfg.batch_images} photos (x5 captions) a batch, {source} repeated to "
        f"{args.images:,} photos, device {device}"
    )
    print(
        f"{'objective':<10}{'precision':<15}{'batches':>8}{'seconds':>9}{'photos/s':>10}"
        f"{'min/epoch':>11}{'x xe fp32':>11}"
    )
    reference = rows[0][4]
    for objective, precision, steps, seconds, rate in rows:
        minutes = args.images / rate / 60
        print(
            f"{objective:<10}{precision:<15}{steps:>8}{seconds:>9.2f}{rate:>10.1f}"
            f"{minutes:>11.1f}{rate / reference:>11.2f}"
        )
    print(
        f"min/epoch: {args.images:,} photos at the rate of the timed batches (extrapolated, "
        f"after {args.warmup} warm-up batches; no dev evaluation)"
    )


if __name__ == "__main__":
    sys.exit(main())
