"""Does exporting the decoder step to ONNX pay? Beam search with the step in torch eager vs the same
step exported to ONNX and run by ONNX Runtime, on the same encoder features, in the same run.

Only `step` moves (embedding, cell, output layer, log-softmax); the beam bookkeeping stays in
torch either way, as it would in rnncap. Captions from both must be identical.

Usage: python benchmarks/decoder_step.py [--images 64] [--beam 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings

import torch
from torch import nn

from _data import add_data_argument, missing, test_images
from _timing import timed
from rnncap.data.images import open_image
from rnncap.decode.beam import beam_search
from rnncap.models.folder import load_model


class _Step(nn.Module):
    """model.step with the state unpacked, for the exporter: tokens, h, c, A (one grid per row)
    -> log_probs, h, c, weights."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens, h, c, A):
        log_probs, (h, c, _), weights = self.model.step(tokens, (h, c, A))
        return log_probs, h, c, weights


class OrtStepModel:
    """Looks like the captioner to `beam_search`: init_state in torch, step through ORT."""

    def __init__(self, model, threads: int) -> None:
        import onnxruntime as ort

        self.model, self.config, self.static_state = model, model.config, model.static_state
        B, H, P = 6, model.config.hidden_dim, 49
        example = (torch.ones(B, dtype=torch.long), torch.zeros(B, H), torch.zeros(B, H))
        example += (torch.zeros(B, H, P),)
        buffer = io.BytesIO()
        names = ["tokens", "h", "c", "A"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Step(model).eval(),
                example,
                buffer,
                dynamo=False,
                opset_version=17,
                input_names=names,
                output_names=["log_probs", "h_out", "c_out", "weights"],
                dynamic_axes={
                    n: {0: "batch"} for n in [*names, "log_probs", "h_out", "c_out", "weights"]
                }
                | {"A": {0: "b", 2: "p"}},
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, ["CPUExecutionProvider"])

    def init_state(self, features):
        return self.model.init_state(features)

    def step(self, tokens, state):
        h, c, A, image = state  # A: one grid per image; the exported step takes one per row
        grids = A.index_select(0, image).numpy()
        feeds = {"tokens": tokens.numpy(), "h": h.numpy(), "c": c.numpy(), "A": grids}
        log_probs, h, c, weights = (torch.from_numpy(x) for x in self.session.run(None, feeds))
        return log_probs, (h, c, A, image), weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=64, help="test images")
    parser.add_argument("--batch-size", type=int, default=32, help="images per search")
    parser.add_argument("--beam", type=int, default=3, help="beam size")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; best counts")
    args = parser.parse_args()
    if missing(args.data):
        return 0
    model, vocab = load_model("default")
    if model.config.cell_type != "attn":
        print("skipped: this script exports the attention model's step", file=sys.stderr)
        return 0
    paths = test_images(args.data, args.images)
    encoder = model.encoder
    images = torch.stack([encoder.preprocess(open_image(p)) for p in paths])
    with torch.inference_mode():
        features = [encoder(b) for b in images.split(args.batch_size)]
    print(
        f"default model, {len(paths)} Flickr8k test images, batch {args.batch_size}, "
        f"beam {args.beam}"
    )
    print(f"{'threads':>7}  {'decoder step':<22}{'images/s':>10}{'x torch':>9}  same captions")
    for threads in args.threads:
        torch.set_num_threads(threads)
        searchers = {"torch eager": model, "onnxruntime": OrtStepModel(model, threads)}
        best, captions = dict.fromkeys(searchers, float("inf")), {}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for name, searcher in searchers.items():
                    out = []
                    seconds = timed(
                        lambda s=searcher, out=out: out.extend(
                            beam_search(s, f, beam_size=args.beam).tokens for f in features
                        )
                    )
                    best[name] = min(best[name], seconds)
                    captions[name] = [t for batch in out for t in batch]
        for name in searchers:
            same = sum(a == b for a, b in zip(captions[name], captions["torch eager"], strict=True))
            rate = len(paths) / best[name]
            print(
                f"{threads:>7}  {name:<22}{rate:>10.1f}{best['torch eager'] / best[name]:>9.2f}"
                f"  {same}/{len(paths)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
