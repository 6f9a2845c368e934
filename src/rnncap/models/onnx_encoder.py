"""The frozen image encoder exported to ONNX and run by ONNX Runtime: about 5x the images/s of
torch eager on a CPU, same features to 1e-4. `OnnxEncoder` stands in for the torch `Encoder`.

An encoder is exported once: into a model folder by `rnncap export`, or on first use into the
user cache ($XDG_CACHE_HOME/rnncap, else ~/.cache/rnncap), keyed by the encoder's weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from rnncap.models import onnx_check
from rnncap.models.onnx_graph import (  # noqa: F401 - re-exported
    _META,
    CLASSES,
    ENCODER_FILE,
    INPUT,
    OUTPUT,
    GraphEncoder,
    _open_session,
)
from rnncap.utils.config import ConfigError
from rnncap.utils.io import InvalidFileError, atomic_write

OPSET = 17
BACKENDS = ("auto", "onnx", "torch")


class BackendError(ConfigError):
    """A backend that cannot run here: an unknown name, onnx on a GPU or without onnxruntime,
    an encoder that could not be exported to ONNX. `reason` says why."""

    def __init__(self, reason: str):
        super().__init__("backend", reason)


# ------------------------------------------------------------------------ export
def weights_digest(encoder: torch.nn.Module) -> str:
    """SHA-256 of an encoder's name, input size and every weight and buffer (hex)."""
    digest = hashlib.sha256(f"{encoder.name}:{encoder.image_size}".encode())
    for key, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_encoder(
    encoder: torch.nn.Module, path: str | Path, opset: int = OPSET, classifier_float16: bool = False
) -> Path:
    """Export a torch `Encoder` to an ONNX file at `path` (written atomically) and return it.

    The batch axis is dynamic; the encoder's name, output layout, preprocessing constants and
    weights digest travel in the graph's metadata, so `OnnxEncoder(path)` needs nothing else.
    An encoder with an ImageNet classifier gets a second output, its class logits (N, 1000)
    (`Encoder.classify` of the features), for classifier guidance without torch.
    classifier_float16: store the classifier's weight matrix (1000 x C, a quarter of the
    encoder's bytes) in float16, cast to float32 when the graph is loaded; the features are
    untouched. Uses torch's TorchScript-based exporter (`dynamo=False`): it needs the `onnx`
    package only, where the default torch.export-based one also needs `onnxscript`.
    """
    import onnx

    path = Path(path)
    was_training = encoder.training
    encoder = encoder.cpu().eval()
    example = torch.zeros(2, 3, encoder.image_size, encoder.image_size)  # (N, 3, S, S)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation and constant-folding notes
        warnings.simplefilter("ignore")
        outputs = [OUTPUT, CLASSES] if encoder.classifier is not None else [OUTPUT]
        torch.onnx.export(
            _WithClasses(encoder) if len(outputs) > 1 else encoder,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT, *outputs]},
        )
    encoder.train(was_training)
    graph = onnx.load_model_from_string(buffer.getvalue())
    if classifier_float16 and len(outputs) > 1:
        _store_float16(graph, CLASSIFIER_WEIGHT)
    metadata = {
        "encoder": encoder.name,
        "out_channels": str(encoder.out_channels),
        "spatial": json.dumps(bool(encoder.spatial)),
        "image_size": str(encoder.image_size),
        "mean": json.dumps(list(encoder.mean)),
        "std": json.dumps(list(encoder.std)),
        "weights_sha256": weights_digest(encoder),
        "exported_with": f"torch {torch.__version__}, opset {opset}",
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=_META + key, value=value)
    atomic_write(path, lambda tmp: tmp.write_bytes(graph.SerializeToString()))
    return path


CLASSIFIER_WEIGHT = "encoder.classifier.weight"  # the name torch's exporter gives it


def _store_float16(graph, name: str) -> None:
    """Replace the float32 initializer `name` by a float16 one and a Cast back to float32 at the
    head of the graph (ONNX Runtime folds the Cast when it loads the graph)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    found = [t for t in graph.graph.initializer if t.name == name]
    if len(found) != 1:
        raise ValueError(f"the exported graph has no initializer {name!r}")
    half = numpy_helper.from_array(
        numpy_helper.to_array(found[0]).astype(np.float16), name + "_fp16"
    )
    graph.graph.initializer.remove(found[0])
    graph.graph.initializer.append(half)
    cast = onnx.helper.make_node("Cast", [half.name], [name], to=onnx.TensorProto.FLOAT)
    graph.graph.node.insert(0, cast)


class _WithClasses(torch.nn.Module):
    """An encoder returning (features, its class logits), for the export."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor):
        features = self.encoder(images)
        return features, self.encoder.classify(features)


# ------------------------------------------------------------------------ the encoder
class OnnxEncoder(GraphEncoder):
    """An exported encoder run by ONNX Runtime, with the interface of the torch `Encoder`.

    `name`, `out_channels`, `spatial`, `image_size`, `mean`, `std`, `preprocess(pil)` and a call
    on images (N, 3, S, S) returning float32 features (N, C, h, w) (or (N, C)) as torch tensors.
    It runs on the CPU only: `.to("cpu")` returns itself, any other device is a ValueError.
    threads: ONNX Runtime intra-op threads; None takes torch.get_num_threads() at load time.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__(path, threads or torch.get_num_threads())
        self.threads = threads

    def preprocess(self, image) -> torch.Tensor:
        """PIL image of any mode and size -> normalised tensor (3, S, S), as the torch encoder."""
        return torch.from_numpy(self.pixels(image))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S) -> features (N, C, h, w) if spatial else (N, C), on the CPU."""
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.run(array))

    forward = __call__

    def to(self, device: str | torch.device) -> OnnxEncoder:
        if torch.device(device).type != "cpu":
            raise BackendError(f"the ONNX encoder runs on the CPU, not on {device}")
        return self

    def cpu(self) -> OnnxEncoder:
        return self

    def eval(self) -> OnnxEncoder:
        return self

    def train(self, mode: bool = True) -> OnnxEncoder:
        """Always eval, like the torch encoder: a frozen feature extractor."""
        return self


# ------------------------------------------------------------------------ where the file lives
def cache_dir() -> Path:
    """The user cache for exported encoders: $XDG_CACHE_HOME/rnncap, else ~/.cache/rnncap."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rnncap"


def cached_path(encoder: torch.nn.Module, digest: str | None = None) -> Path:
    """Where the user cache keeps `encoder`'s export: keyed by its weights, torch and opset."""
    digest = digest or weights_digest(encoder)
    key = hashlib.sha256(f"{digest}:torch {torch.__version__}:opset {OPSET}:classes".encode())
    return cache_dir() / "encoders" / f"{encoder.name}-{key.hexdigest()[:16]}.onnx"


def onnx_encoder_for(
    encoder: torch.nn.Module, folder: str | Path | None = None, threads: int | None = None
) -> OnnxEncoder:
    """The ONNX twin of a torch `Encoder`.

    A model folder's `encoder.onnx` (from `rnncap export`) is used when it was exported from
    these very weights, after checking its SHA-256 against config.json and its metadata and
    output against `encoder` (InvalidFileError otherwise); else the user cache's copy, checked
    against the digest recorded beside it and exported there (again) when it is missing or
    damaged, with one line on stderr.
    """
    digest = weights_digest(encoder)
    if folder is not None and (Path(folder) / ENCODER_FILE).is_file():
        bundled = _folder_encoder(Path(folder), threads)
        onnx_check.check_matches(bundled, encoder)
        if bundled.weights_sha256 == digest:
            return bundled
        print(
            f"rnncap: {bundled.path} was exported from other {bundled.name} weights; "
            "using the user cache instead",
            file=sys.stderr,
        )
    path = cached_path(encoder, digest)
    if not onnx_check.cache_file_intact(path):
        what = "exporting encoder {} to ONNX once: {}"
        if path.exists():
            what = "re-exporting encoder {}: the cached ONNX file is damaged or incomplete: {}"
        print("rnncap: " + what.format(encoder.name, path), file=sys.stderr)
        export_encoder(encoder, path)
        onnx_check.record_digest(path)
    cached = OnnxEncoder(path, threads)
    onnx_check.check_matches(cached, encoder)
    return cached


def cached_encoder_file(name: str) -> Path:
    """The user cache's ONNX file of the pretrained encoder `name`, exported there once (checked
    as `onnx_encoder_for` checks it): the runtime's encoder for a folder without encoder.onnx."""
    from rnncap.models.encoders import build_encoder

    return onnx_encoder_for(build_encoder(name), threads=1).path


def _folder_encoder(folder: Path, threads: int | None) -> OnnxEncoder:
    """The folder's encoder.onnx, opened only once its digest matches config.json's record."""
    from rnncap.models.folder import read_config

    path = folder / ENCODER_FILE
    onnx_check.check_folder_file(path, read_config(folder).get(onnx_check.RECORD))
    return OnnxEncoder(path, threads)


# ------------------------------------------------------------------------ backend choice
def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """'auto' -> 'onnx' on a CPU when onnxruntime is installed, else 'torch'.

    'onnx' on another device, or without onnxruntime, raises BackendError.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "onnx" if cpu and onnxruntime_available() else "torch"
    if backend == "onnx" and not cpu:
        raise BackendError(f"the onnx backend runs on the CPU, not on {device}")
    if backend == "onnx" and not onnxruntime_available():
        raise BackendError("the onnx backend needs onnxruntime (pip install onnxruntime)")
    return backend


def encoder_for_backend(
    encoder,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    folder: str | Path | None = None,
    threads: int | None = None,
) -> tuple[object, str]:
    """A torch `Encoder` -> (the encoder to run under `backend` on `device`, backend used).

    With 'auto', an encoder that cannot be exported falls back to torch with one line on
    stderr; with 'onnx' it is a BackendError giving the reason. folder: a model folder, searched
    for an `encoder.onnx` first.
    """
    resolved = resolve_backend(backend, device)
    if resolved == "torch" or isinstance(encoder, OnnxEncoder):
        return encoder, resolved
    try:
        return onnx_encoder_for(encoder, folder, threads), resolved
    except InvalidFileError:  # a damaged or foreign graph in the model folder: never ignored
        raise
    except Exception as error:  # an exporter, ONNX Runtime or file system failure
        reason = " ".join(str(error).split()) or type(error).__name__
        if backend == "onnx":
            raise BackendError(f"ONNX encoder unavailable ({reason})") from error
        print(f"rnncap: ONNX encoder unavailable ({reason}); using torch", file=sys.stderr)
        return encoder, "torch"


class DeferredEncoder:
    """Holds a captioner's encoder slot until the encoder is first used, then builds the torch
    encoder named in the config and, for 'onnx'/'auto', its ONNX twin (`encoder_for_backend`).

    `CaptioningRNN.encoder` calls `.to(device)` on whatever it holds: here that returns the real
    encoder, so a model loaded for features only never builds, exports or downloads anything.
    """

    def __init__(self, name: str, backend: str, device, folder=None, threads=None) -> None:
        self.name, self.requested, self.device = name, backend, device
        self.folder, self.threads = folder, threads
        self.backend = resolve_backend(backend, device)  # what it will be, barring a failure
        self._encoder = None

    def resolve(self):
        if self._encoder is None:
            from rnncap.models.encoders import build_encoder

            torch_encoder = build_encoder(self.name)
            self._encoder, self.backend = encoder_for_backend(
                torch_encoder, self.requested, self.device, self.folder, self.threads
            )
        return self._encoder

    def to(self, device):
        return self.resolve().to(device)


def use_backend(
    model, backend: str = "auto", folder: str | Path | None = None, threads: int | None = None
) -> str:
    """Give a `CaptioningRNN` the encoder of `backend`; returns the backend it ends up with.

    Only the encoder changes: the decoder runs in torch either way. A model whose encoder is not
    built yet gets a `DeferredEncoder` (nothing is built until the encoder is used); a built
    torch encoder is swapped now. 'torch' puts back a torch encoder where an ONNX one was set.
    """
    device = next(model.parameters()).device
    resolved = resolve_backend(backend, device)
    current = model.__dict__.get("_encoder")
    if resolved == "torch":
        if isinstance(current, OnnxEncoder | DeferredEncoder):
            model.set_encoder(None)  # the torch encoder is built on next use
        return "torch"
    if current is None or isinstance(current, DeferredEncoder):
        model.set_encoder(DeferredEncoder(model.config.encoder, backend, device, folder, threads))
        return resolved
    encoder, used = encoder_for_backend(current, backend, device, folder, threads)
    model.set_encoder(encoder)
    return used


def current_backend(model) -> str:
    """How a captioner's encoder runs, 'onnx' or 'torch', without building anything."""
    encoder = model.__dict__.get("_encoder")
    if isinstance(encoder, DeferredEncoder):
        return encoder.backend
    return "onnx" if isinstance(encoder, OnnxEncoder) else "torch"


def max_feature_difference(
    reference, candidate, images: torch.Tensor, batch_size: int = 8
) -> float:
    """Largest |reference(images) - candidate(images)| over preprocessed images (N, 3, S, S)."""
    worst = 0.0
    with torch.inference_mode():
        for batch in images.split(batch_size):
            difference = (reference(batch).float() - candidate(batch).float()).abs().max()
            worst = max(worst, float(difference))
    return worst
