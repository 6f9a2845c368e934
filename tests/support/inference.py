"""Helpers for the caption, viz and serve tests: a tiny attention model saved to disk, a tiny
encoder, the sample photos, broken image files, a reference captioner, and a server started as a
subprocess."""

from __future__ import annotations

import functools
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import save_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CAPTIONS = [
    "a cat lies on a red sofa",
    "a woman in a space suit smiles",
    "a cup of coffee on a wooden table",
    "a rocket takes off into the blue sky",
    "a man with a camera on a tripod",
]


def example_images() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jpg"))


def example_copies(folder: Path, truncated_at: int) -> list[Path]:
    """The sample photos twice, copied into `folder` under numbered names, with a truncated JPEG
    inserted at position `truncated_at`."""
    import shutil

    paths = []
    for k, path in enumerate(example_images() * 2):
        paths.append(folder / f"{k:02d}_{path.name}")
        shutil.copy(path, paths[-1])
    paths.insert(truncated_at, truncated_jpeg(folder / "truncated.jpg"))
    return paths


@functools.cache
def shared_encoder():
    """One pretrained EfficientNet-Lite0 per test process (building it takes seconds)."""
    from rnncap.models.encoders import build_encoder

    return build_encoder("efficientnet_lite0")


def tiny_encoder(spatial: bool = True, seed: int = 0):
    """A two-layer CNN with the Encoder interface: 16 channels, 4 x 4 grid at 32 px."""
    from torch import nn

    from rnncap.models.encoders import Encoder

    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6()]
    layers += [nn.Conv2d(8, 16, 3, stride=4, padding=1)]
    if not spatial:
        layers.append(nn.AdaptiveAvgPool2d(1))
    trunk = nn.Sequential(*layers)
    return Encoder("tiny", trunk, 16, spatial, 32, mean=[0.5] * 3, std=[0.25] * 3)


def make_tiny_encoder_model(folder: Path, seed: int = 0) -> Path:
    """Save an untrained attention captioner on `tiny_encoder`'s 16 channels to `folder` (its
    config names the encoder "tiny": patch build_encoder to return `tiny_encoder()`)."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS)
    config = CaptionerConfig(
        encoder="tiny",
        feature_dim=16,
        cell_type="attn",
        wordvec_dim=8,
        hidden_dim=16,
        vocab_size=len(vocab),
        max_length=5,
    )
    return save_model(folder, CaptioningRNN(config).eval(), vocab)


def forbid_encoder_export(monkeypatch) -> None:
    """Make any export of an encoder to ONNX fail the test."""
    from rnncap.models import onnx_encoder

    def export(*args, **kwargs):
        raise AssertionError("an encoder was exported to ONNX")

    monkeypatch.setattr(onnx_encoder, "export_encoder", export)


def make_tiny_model(folder: Path, cell_type: str = "attn", seed: int = 0) -> Path:
    """Save a small untrained captioner on EfficientNet-Lite0 features to `folder`."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build(CAPTIONS)
    config = CaptionerConfig(
        encoder="efficientnet_lite0",
        feature_dim=1280,
        cell_type=cell_type,
        wordvec_dim=16,
        hidden_dim=32,
        vocab_size=len(vocab),
        max_length=6,
    )
    model = CaptioningRNN(config)
    with torch.no_grad():  # peaky word choices that differ between photos, <end> unlikely
        model.vocab_proj.weight *= 4.0
        model.vocab_proj.bias[config.end_id] -= 2.0
    return save_model(folder, model.eval(), vocab)


def reference_captions(model, vocab, paths, beam_size: int = 3) -> list[tuple[str, float, list]]:
    """Caption images one by one the plain way: open, preprocess, encode, beam search."""
    from rnncap.data.images import open_image
    from rnncap.decode.beam import beam_search

    out = []
    with torch.no_grad():
        for path in paths:
            x = model.encoder.preprocess(open_image(path))[None]  # (1, 3, S, S)
            decoded = beam_search(model, model.encode(x), beam_size=beam_size)
            attention = decoded.attention[0] if decoded.attention else None
            out.append((vocab.decode(decoded.tokens[0]), decoded.scores[0], attention))
    return out


def tiny_captioner(folder: Path):
    """The tiny model saved in `folder`, loaded on the CPU with the shared pretrained encoder."""
    from rnncap.decode.captioner import load

    captioner = load(make_tiny_model(folder / "tiny"), device="cpu")
    captioner.model.set_encoder(shared_encoder())
    return captioner


def reference_by_name(captioner) -> dict[str, tuple[str, float, list]]:
    """`reference_captions` of the sample photos, by file name."""
    paths = example_images()
    captions = reference_captions(captioner.model, captioner.vocab, paths)
    return {p.name: caption for p, caption in zip(paths, captions, strict=True)}


# ------------------------------------------------------------------------ broken files
def truncated_jpeg(path: Path) -> Path:
    data = (EXAMPLES / "cat.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def bomb_png(path: Path, side: int = 40_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (far above PIL's MAX_IMAGE_PIXELS)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def crafted_images() -> dict[str, bytes]:
    """Tiny files on which Pillow's decoders raise what they should not: NotImplementedError
    (DDS), BLPFormatError (BLP), AttributeError and OverflowError (SPIDER)."""
    dds = struct.pack("<4sI", b"DDS ", 124) + struct.pack("<6I", 0x1007, 4, 4, 0, 0, 0)
    dds += bytes(44) + struct.pack("<II4s5I", 32, 0x4, b"ZZZZ", 0, 0, 0, 0, 0) + bytes(84)
    blp = b"BLP1" + struct.pack("<6I", 7, 0, 4, 4, 0, 0) + bytes(200)

    def spider(stack: float, number: float) -> bytes:
        header = [0.0] * 27  # 1 slice of 4 x 4, one 108-byte header record
        header[0], header[1], header[4], header[11], header[12] = 1, 4, 1, 4, 1
        header[21], header[22], header[23], header[26] = 108, 108, stack, number
        return struct.pack(">27f", *header) + bytes(64)

    return {
        "crafted.dds": dds,
        "crafted.blp": blp,
        "stack.spider": spider(0, 1),
        "infinite.spider": spider(float("inf"), 0),
    }


# ------------------------------------------------------------------------ a server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`rnncap serve` in a subprocess on a free loopback port; stop() ends it."""

    def __init__(self, model_dir: Path, log: Path, *extra: str, open_files: int | None = None):
        """open_files: the server's limit on open file descriptors (`ulimit -n`)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "rnncap.cli", "serve", "--model", str(model_dir)]
        command += ["--port", str(self.port), "--device", "cpu", *extra]
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=None if open_files is None else _limit_open_files(open_files),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def _limit_open_files(count: int):
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return limit


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
