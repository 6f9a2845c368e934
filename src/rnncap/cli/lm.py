"""`rnncap lm`: train the from-scratch RNN or LSTM as a word-level language model on captions.

`--cell torch-lstm` trains torch.nn.LSTM identically, as the reference perplexity.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from rnncap.cli._common import UsageError

NAME = "lm"
HELP = "train an RNN/LSTM language model on captions (Flickr8k or a text file), sample from it"
EXTRA = "train"  # torch (rnncap.cli._extras)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _data_arguments(parser.add_argument_group("data"))
    _model_arguments(parser.add_argument_group("model and training"))
    _output_arguments(parser.add_argument_group("output"))


def _data_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Flickr8k folder (captions.txt, Flickr_8k.*Images.txt, Images/); "
        "required unless --load",
    )
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="train on this caption text instead of --data (.jsonl with a "
        "'captions' list per line, or one caption per line); every 20th "
        "line, chosen by --seed, is held out for validation",
    )
    parser.add_argument(
        "--vocab",
        type=Path,
        default=None,
        help="use this vocabulary (a vocab.json, e.g. a captioner's, so the "
        "model can be fused into its decoding) instead of building one",
    )
    parser.add_argument(
        "--min-count",
        type=int,
        default=5,
        help="words seen fewer times in the train split become <unk> (default: 5)",
    )


def _model_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.1,
        help="dropout on word vectors and hidden states (default: 0.1)",
    )
    parser.add_argument(
        "--cell",
        default="lstm",
        choices=["rnn", "lstm", "torch-lstm"],
        help="recurrent layer: from-scratch rnn or lstm, or torch.nn.LSTM as the "
        "reference (default: lstm)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    parser.add_argument("--embed", type=int, default=128, help="word vector size (default: 128)")
    parser.add_argument(
        "--hidden", type=int, default=256, help="recurrent state size (default: 256)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="captions per batch (default: 64)"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=2e-3,
        help="Adam learning rate, halved every epoch (default: 2e-3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def _output_arguments(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder: model.safetensors, config.json, vocab.json, "
        "history.json, curve.png (default: runs/lm-CELL)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=5,
        metavar="K",
        help="print K sentences sampled from the model (default: 5)",
    )
    parser.add_argument(
        "--load",
        type=Path,
        default=None,
        metavar="DIR",
        help="skip training: load a model saved by `rnncap lm` and sample from it",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="one training batch per epoch: a quick check of the whole pipeline",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _check(args: argparse.Namespace) -> None:
    for name in ("epochs", "embed", "hidden", "batch_size", "min_count"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.sample < 0:
        raise UsageError("--sample must be 0 or more")
    if args.lr <= 0:
        raise UsageError("--lr must be positive")
    if not 0 <= args.dropout < 1:
        raise UsageError("--dropout must be in [0, 1)")
    if args.load is None and (args.data is None) == (args.text is None):
        raise UsageError(
            "give --data (the Flickr8k folder) or --text (a caption text file), "
            "unless --load is given"
        )
    for flag, path in (("--text", args.text), ("--vocab", args.vocab)):
        if path is not None and not path.is_file():
            raise UsageError(f"{flag} {path}: no such file")
    if args.load is not None and not (args.load / "config.json").is_file():
        raise UsageError(f"--load {args.load}: not a folder written by `rnncap lm`")


def run(args: argparse.Namespace) -> int:
    _check(args)
    import torch

    from rnncap.engine import lm_train
    from rnncap.utils.device import resolve_device
    from rnncap.utils.plotting import plot_lm_history

    device = resolve_device(args.device)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if args.load is not None:
        model, vocab = lm_train.load(args.load, device)
        for sentence in lm_train.sample(model, vocab, args.sample, generator=generator):
            print(sentence)
        return 0

    train_captions, dev_captions = _captions(args)
    vocab = _vocabulary(args, train_captions)
    model, vocab, config, history, seconds = _train(
        args, train_captions, dev_captions, vocab, device
    )
    out = args.out or Path("runs") / f"lm-{args.cell}"
    lm_train.save(model, vocab, config, history, out)
    plot_lm_history(history, out / "curve.png", f"{args.cell} language model")
    summary = {
        "cell": args.cell,
        "val_perplexity": history.epoch_val_ppl[-1],
        "train_seconds": round(seconds, 1),
        "device": str(device),
        **asdict(config),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"validation perplexity {history.epoch_val_ppl[-1]:.2f} after {config.epochs} epochs "
        f"({seconds:.0f} s); saved to {out}"
    )
    for sentence in lm_train.sample(model, vocab, args.sample, generator=generator):
        print(sentence)
    return 0


def _captions(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(train captions, validation captions): Flickr8k's train and dev splits, or the text file
    with every 20th caption group (a seeded choice) held out."""
    import random

    if args.text is None:
        from rnncap.data.datasets import load_dataset

        return (
            load_dataset(args.data, "flickr8k", "train").captions,
            load_dataset(args.data, "flickr8k", "dev").captions,
        )
    from rnncap.engine.sources import read_caption_text

    groups = read_caption_text(args.text)
    random.Random(args.seed).shuffle(groups)
    held = max(1, len(groups) // 20)
    return [c for g in groups[held:] for c in g], [c for g in groups[:held] for c in g]


def _vocabulary(args: argparse.Namespace, captions: list[str]):
    from rnncap.data.vocab import Vocabulary

    if args.vocab is not None:
        return Vocabulary.load(args.vocab)
    return Vocabulary.build(captions, args.min_count)


def _train(args: argparse.Namespace, train_captions, dev_captions, vocab, device):
    """Build the model, train -> (model, vocab, config, history, seconds)."""
    from rnncap.engine import lm_train
    from rnncap.models import lm

    config = lm_train.LMTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        min_count=args.min_count,
        seed=args.seed,
        model=lm.LMConfig(
            cell=args.cell, embed_dim=args.embed, hidden_dim=args.hidden, dropout=args.dropout
        ),
    )
    config.model.vocab_size = len(vocab)
    train_seqs = lm_train.encode_captions(train_captions, vocab)
    val_seqs = lm_train.encode_captions(dev_captions, vocab)
    if args.dry_run:
        val_seqs = val_seqs[: config.batch_size]
    source = f"from {args.vocab}" if args.vocab is not None else f"min count {config.min_count}"
    print(
        f"vocabulary {len(vocab)} words ({source}); "
        f"{len(train_seqs)} train and {len(val_seqs)} validation captions; cell {args.cell} "
        f"on {device}",
        flush=True,
    )

    model = lm.LanguageModel(config.model).to(device)
    start = time.perf_counter()
    history = lm_train.train(
        model,
        train_seqs,
        val_seqs,
        config,
        vocab.pad_id,
        max_batches=1 if args.dry_run else None,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    return model, vocab, config, history, seconds
