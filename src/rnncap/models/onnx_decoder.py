"""The captioner's decoder step exported to ONNX and run by ONNX Runtime: beam search makes about
15 such steps per batch, and ONNX Runtime runs each one about 1.3x faster than torch eager on a
CPU (embedding, recurrent cell, attention, output layer and log-softmax in one graph).

`OnnxDecoder` looks like the captioner to `rnncap.decode.beam`: `config`, `static_state`,
`init_state` (torch: the feature projection runs once per batch) and `step` (ONNX Runtime). The
beam bookkeeping stays in torch. A step graph is exported once per set of decoder weights: into
a model folder by `rnncap export` (decoder_step.onnx), or on first use into the user cache
(`$XDG_CACHE_HOME/rnncap/decoders/`), like the encoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from rnncap.models.onnx_encoder import OPSET, cache_dir, open_session
from rnncap.utils.io import atomic_write

STEP_FILE = "decoder_step.onnx"  # the exported step's name inside a model folder
TOKENS, LOG_PROBS, WEIGHTS = "tokens", "log_probs", "weights"
_DIGEST_KEY = "rnncap.decoder_sha256"  # graph metadata: the weights it was exported from


class _StepGraph(nn.Module):
    """`model.step` with its state spread over inputs and outputs, for the exporter:
    (tokens (B,), s0, s1, ...) -> (log_probs (B, V), the state entries that change, weights)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.static = set(model.static_state)

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor):
        log_probs, new_state, weights = self.model.step(tokens, tuple(state))
        changing = [s for i, s in enumerate(new_state) if i not in self.static]
        return (log_probs, *changing) + ((weights,) if weights is not None else ())


def decoder_digest(model) -> str:
    """SHA-256 (hex) of a captioner's config and decoder weights (the encoder is not in them)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _example_state(model) -> tuple[torch.Tensor, ...]:
    """A decoder state for 3 hypotheses, from features of the model's own shape."""
    cfg = model.config
    shape = (3, cfg.feature_dim, 7, 7) if cfg.cell_type == "attn" else (3, cfg.feature_dim)
    with torch.no_grad():
        return model.init_state(torch.zeros(shape, dtype=model.vocab_proj.weight.dtype))


def export_step(model, path: str | Path, opset: int = OPSET) -> Path:
    """Export `model.step` (a CPU `CaptioningRNN` in eval mode) to `path`, atomically.

    Inputs: tokens (B,) int64, then state entries s0, s1, ... as `init_state` returns them
    (batch and attention grid size dynamic); outputs: log_probs, the entries that change
    (h0, h1, ...) and, for the attention model, its weights (B, P). The decoder's digest
    travels in the graph's metadata.
    """
    import onnx

    state = _example_state(model)
    static = set(model.static_state)
    inputs = [TOKENS] + [f"s{i}" for i in range(len(state))]
    changing = [f"h{i}" for i in range(len(state)) if i not in static]
    outputs = [LOG_PROBS, *changing] + ([WEIGHTS] if model.config.cell_type == "attn" else [])
    axes = {name: {0: "batch"} for name in inputs + outputs}
    if model.config.cell_type == "attn":
        axes["s2"] = {0: "batch", 2: "positions"}
        axes[WEIGHTS] = {0: "batch", 1: "positions"}
    tokens = torch.full((3,), model.config.start_id, dtype=torch.long)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():  # the exporter's deprecation notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _StepGraph(model).eval(), (tokens, *state), buffer, dynamo=False,
            opset_version=opset, input_names=inputs, output_names=outputs, dynamic_axes=axes,
        )  # fmt: skip
    graph = onnx.load_model_from_string(buffer.getvalue())
    graph.metadata_props.add(key=_DIGEST_KEY, value=decoder_digest(model))
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(graph.SerializeToString()))
    return path


class OnnxDecoder:
    """A captioner whose `step` runs in ONNX Runtime; everything else is the torch model's.

    threads: ONNX Runtime intra-op threads; None takes torch.get_num_threads() at load time.
    """

    def __init__(self, model, path: str | Path, threads: int | None = None) -> None:
        self.model, self.path = model, Path(path)
        self.config = model.config
        self.static_state = model.static_state
        self._static, self._threads = set(model.static_state), threads
        self._session = open_session(self.path, threads or torch.get_num_threads())
        meta = self._session.get_modelmeta().custom_metadata_map
        self.weights_sha256 = meta.get(_DIGEST_KEY, "")

    def __getstate__(self) -> dict:  # a session does not pickle: reopen the file instead
        return {"model": self.model, "path": self.path, "threads": self._threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model"], state["path"], state["threads"])

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.init_state(features)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """tokens (B,) -> (log_probs (B, V), new state, attention (B, P) | None), as the model."""
        feeds = {TOKENS: tokens.cpu().numpy()}
        feeds.update({f"s{i}": s.detach().contiguous().numpy() for i, s in enumerate(state)})
        outputs = iter(torch.from_numpy(x) for x in self._session.run(None, feeds))
        log_probs = next(outputs)
        new_state = tuple(s if i in self._static else next(outputs) for i, s in enumerate(state))
        return log_probs, new_state, next(outputs, None)


def onnx_decoder_for(
    model, folder: str | Path | None = None, threads: int | None = None
) -> OnnxDecoder:
    """The ONNX Runtime twin of a CPU captioner's decoder: a model folder's decoder_step.onnx
    (`rnncap export`) when it was exported from these very weights, else the user cache's copy,
    exported there on first use (one line on stderr)."""
    digest = decoder_digest(model)
    if folder is not None and (Path(folder) / STEP_FILE).is_file():
        bundled = OnnxDecoder(model, Path(folder) / STEP_FILE, threads)
        if bundled.weights_sha256 == digest:
            return bundled
        print(f"rnncap: {bundled.path} was exported from other weights; using the user cache "
              "instead", file=sys.stderr)  # fmt: skip
    key = hashlib.sha256(f"{digest}:torch {torch.__version__}:opset {OPSET}".encode())
    path = cache_dir() / "decoders" / f"{model.config.cell_type}-{key.hexdigest()[:16]}.onnx"
    if not path.is_file():
        print(f"rnncap: exporting the decoder step to ONNX once: {path}", file=sys.stderr)
        export_step(model, path)
    return OnnxDecoder(model, path, threads)
