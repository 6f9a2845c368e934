"""`rnncap.data.cache_build`: the overlapped build stages (run here on the CPU) give the features
of the stages run in turn; shards are written in order and a write error is raised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rnncap.data.cache_build import ShardWriter, content_keys, overlapped_batches
from rnncap.data.features import file_key
from rnncap.data.gpu_images import device_batches
from rnncap.models.encoders import Encoder
from support.inference import example_copies


class _Pool(nn.Module):
    """A stand-in encoder: 4 x 4 average pooling, (B, 3, 32, 32) -> (B, 3, 8, 8)."""

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 4)


def _encoder() -> Encoder:
    return Encoder("pool", _Pool(), 3, True, 32, mean=[0.5] * 3, std=[0.25] * 3)


@pytest.fixture
def files(tmp_path):
    return example_copies(tmp_path, truncated_at=4)


@pytest.mark.parametrize("mirrored", [False, True])
def test_overlapped_stages_equal_the_stages_in_turn(files, mirrored):
    encoder, cpu = _encoder(), torch.device("cpu")
    got = list(overlapped_batches(files, encoder, cpu, 3, 2, mirrored))
    want = list(device_batches(files, encoder, cpu, 3, 0))
    assert [(i, b) for _, i, b in got] == [(i, b) for _, i, b in want]
    assert len(want) == 4 and sum(len(b) for _, _, b in want) == 1
    for (features, _, _), (images, _, _) in zip(got, want, strict=True):
        images = images.flip(-1) if mirrored else images
        assert features.dtype == np.float16  # NumPy from the encoder on
        assert torch.equal(torch.from_numpy(features), encoder(images).to(torch.float16))


def test_content_keys_in_threads(files):
    assert content_keys(files[:5] + files[5:], 3) == [file_key(p) for p in files[:5] + files[5:]]


class _Recorder:
    def __init__(self, fail_on: int | None = None):
        self.added, self.fail_on = [], fail_on

    def add(self, keys, features):
        if len(self.added) == self.fail_on:
            raise OSError("disk full")
        self.added.append((keys, features))


def test_shard_writer_keeps_the_order_and_raises_a_write_error():
    recorder = _Recorder()
    with ShardWriter(recorder, queued=1) as writer:
        for k in range(5):
            writer.add([f"key{k}"], torch.full((1, 2), float(k)))
    assert [keys for keys, _ in recorder.added] == [[f"key{k}"] for k in range(5)]
    with pytest.raises(OSError, match="disk full"), ShardWriter(_Recorder(fail_on=1)) as writer:
        for k in range(5):
            writer.add([f"key{k}"], torch.zeros(1, 2))
