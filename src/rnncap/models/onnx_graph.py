"""An image encoder exported to ONNX (`rnncap export`), run by ONNX Runtime without torch: its
metadata, NumPy preprocessing, and features (N, C, h, w) with the ImageNet class logits of
classifier guidance when the graph has them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rnncap.data.images import preprocess_pixels
from rnncap.models import onnx_check
from rnncap.utils.io import InvalidFileError, first_line

ENCODER_FILE = "encoder.onnx"  # the exported encoder's name inside a model folder
INPUT, OUTPUT, CLASSES = "images", "features", "class_logits"
_META = "rnncap."  # prefix of the metadata keys written into an exported graph


class GraphEncoder:
    """An exported encoder run by ONNX Runtime on NumPy arrays.

    `name`, `out_channels`, `spatial`, `image_size`, `mean`, `std` from the graph's metadata;
    `pixels(pil)` -> (3, S, S) float32, `run(images)` -> features, `run_with_classes(images)`
    -> (features, class logits (N, 1000) or None). threads: ONNX Runtime intra-op threads
    (None: the CPU count).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        try:
            self._session = _open_session(self.path, threads or os.cpu_count() or 1)
        except Exception as error:  # ONNX Runtime's InvalidProtobuf, Fail, RuntimeException...
            raise InvalidFileError(
                self.path, f"not a usable ONNX graph ({first_line(error)})"
            ) from None
        meta = self._session.get_modelmeta().custom_metadata_map
        if _META + "encoder" not in meta:
            raise InvalidFileError(self.path, "not an encoder exported by rnncap (no metadata)")
        try:
            self.name = meta[_META + "encoder"]
            self.out_channels = int(meta[_META + "out_channels"])
            self.spatial = bool(json.loads(meta[_META + "spatial"]))
            self.image_size = int(meta[_META + "image_size"])
            self.mean = tuple(float(x) for x in json.loads(meta[_META + "mean"]))
            self.std = tuple(float(x) for x in json.loads(meta[_META + "std"]))
            self.weights_sha256 = meta[_META + "weights_sha256"]
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidFileError(
                self.path, f"broken rnncap metadata ({first_line(error)})"
            ) from None
        self.has_classes = CLASSES in {o.name for o in self._session.get_outputs()}

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int | None = None) -> GraphEncoder:
        """A model folder's encoder.onnx, opened only once its SHA-256 matches config.json's."""
        from rnncap.models.files import read_config

        path = Path(folder) / ENCODER_FILE
        onnx_check.check_folder_file(path, read_config(folder).get(onnx_check.RECORD))
        return cls(path, threads)

    def pixels(self, image, out: np.ndarray | None = None) -> np.ndarray:
        """PIL image of any mode and size -> normalised float32 array (3, S, S), written into
        `out` (3, S, S) when given."""
        return preprocess_pixels(image, self.image_size, self.mean, self.std, out)

    def run(self, images: np.ndarray) -> np.ndarray:
        """NumPy float32 images (N, 3, S, S) -> NumPy features (N, C, h, w) or (N, C).
        A graph that fails or returns another shape is an InvalidFileError naming the file."""
        return self.run_with_classes(images, classes=False)[0]

    def run_with_classes(self, images: np.ndarray, classes: bool = True):
        """images (N, 3, S, S) -> (features, ImageNet logits (N, 1000) or None)."""
        outputs = [OUTPUT, CLASSES] if classes and self.has_classes else [OUTPUT]
        try:
            results = self._session.run(outputs, {INPUT: np.ascontiguousarray(images)})
        except Exception as error:  # ONNX Runtime's Fail, RuntimeException (allocation)...
            raise InvalidFileError(
                self.path, f"ONNX Runtime could not run it ({first_line(error)})"
            ) from None
        features = results[0]
        onnx_check.check_output(self.path, features, len(images), self.out_channels, self.spatial)
        return features, (results[1] if len(results) > 1 else None)

    def declared_output_shape(self) -> list:
        """The graph's declared output shape: ints and names of dynamic axes."""
        return list(self._session.get_outputs()[0].shape)

    def __getstate__(self) -> dict:  # a session does not pickle: reopen the file instead
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["threads"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, out_channels={self.out_channels}, "
            f"spatial={self.spatial}, image_size={self.image_size}, path='{self.path}')"
        )


def _open_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # fatal only: a failed run is raised as one InvalidFileError
    # Idle threads sleep instead of spinning: the DataLoader workers decoding JPEGs and torch's
    # beam search need those cores between encoder calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
