"""The captioner, beam search and training on each device against the CPU.

Every test is parametrised over the device: the CPU variant runs everywhere and proves the test
itself; the CUDA variant is marked `gpu`. Float32 results are compared with a float64 CPU run
(tolerances derived in support.cuda), TF32 off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnncap.decode.beam import beam_search
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.nn.loss import captioning_loss
from rnncap.utils.device import cuda_math
from support.cuda import assert_error_like, devices
from support.tinydata import make_dataset, tiny_train_config, train_killed_after_first_epoch

V, W, H, C, GRID = 30, 16, 32, 24, (3, 3)


def _model(cell_type: str, seed: int = 0) -> CaptioningRNN:
    torch.manual_seed(seed)
    cfg = CaptionerConfig(
        encoder="fake",
        feature_dim=C,
        cell_type=cell_type,
        wordvec_dim=W,
        hidden_dim=H,
        vocab_size=V,
        max_length=8,
    )
    return CaptioningRNN(cfg).eval()


def _features(cell_type: str, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, C, *GRID) if cell_type == "attn" else (n, C)
    return torch.randn(shape, generator=g)


def _loss_and_grads(model, features, captions, counts):
    model.zero_grad(set_to_none=True)
    logits, weights = model(features, captions[:, :-1], counts)
    loss = captioning_loss(logits, captions[:, 1:], weights, attention_reg=1.0)
    loss.backward()
    return loss.detach(), {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("cell_type", ["rnn", "lstm", "attn"])
def test_captioner_loss_and_gradients_match_cpu(cell_type, device):
    """Loss and every parameter gradient on `device` (float32) against float64 on the CPU: the
    error is at most a few times the float32 CPU run's own error."""
    N, T = 4, 7
    features = _features(cell_type, N)
    g = torch.Generator().manual_seed(2)
    counts = torch.tensor([1, 3, 2, 2])
    captions = torch.randint(4, V, (int(counts.sum()), T + 1), generator=g)
    captions[:, 0] = 1  # <start>
    captions[0, 4:] = 0  # padding
    captions[3, 6:] = 0

    results = {}
    for name, dev, dtype in (
        ("ref", "cpu", torch.float64),
        ("cpu", "cpu", torch.float32),
        ("dev", device, torch.float32),
    ):
        model = _model(cell_type).to(dev, dtype)
        with cuda_math(tf32=False):
            results[name] = _loss_and_grads(
                model, features.to(dev, dtype), captions.to(dev), counts.to(dev)
            )
    (ref_loss, ref_grads), (cpu_loss, cpu_grads), (dev_loss, dev_grads) = results.values()
    # a gradient sums over every word position of every caption, each through the recurrence
    terms = int(counts.sum()) * T * (W + H + V)
    assert_error_like("loss", dev_loss, cpu_loss, ref_loss, terms)
    for k in ref_grads:
        assert_error_like(k, dev_grads[k], cpu_grads[k], ref_grads[k], terms)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("cell_type", ["lstm", "attn"])
def test_beam_search_matches_cpu(cell_type, device):
    """The same words on `device` as in float64 on the CPU; scores and attention close."""
    model64 = _model(cell_type).double()
    with torch.no_grad():  # sharper word distributions: no near-ties for rounding to flip
        model64.vocab_proj.weight.mul_(8)
    features = _features(cell_type, 6)
    want = beam_search(model64, features.double(), beam_size=3)
    with cuda_math(tf32=False):
        got = beam_search(model64.to(device, torch.float32), features.to(device), beam_size=3)
    assert got.tokens == want.tokens
    assert sum(len(t) for t in want.tokens) >= len(want.tokens)  # real captions, not all empty
    torch.testing.assert_close(
        torch.tensor(got.scores, dtype=torch.float64),
        torch.tensor(want.scores, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-5,
    )
    if want.attention is not None:
        for a, b in zip(got.attention, want.attention, strict=True):
            assert a.device.type == "cpu"
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("tiny8k"))


def _config(root: Path, out: Path, device: str, **kw):
    return tiny_train_config(root, out, device=device, deterministic=True, amp=True, **kw)


@pytest.mark.parametrize("device", devices())
def test_train_killed_and_resumed_equals_uninterrupted(dataset, tmp_path, monkeypatch, device):
    """Mirrors tests/test_train.py on `device` (bfloat16 autocast on CUDA, deterministic
    kernels): a run stopped after epoch 1 and resumed ends with the same weights, bit for bit."""
    import rnncap.engine.train as train_module

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train_module.train(_config(dataset, straight, device))
    train_killed_after_first_epoch(_config(dataset, killed, device), monkeypatch)
    train_module.train(_config(dataset, killed, device, resume=True))

    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(killed / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    epochs = [json.loads(x)["epoch"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert not torch.are_deterministic_algorithms_enabled()  # the setting did not leak out


def test_decode_workers_leave_the_model_its_cores(monkeypatch):
    from rnncap.utils import device as device_module

    assert device_module.decode_workers(3, "cpu") == 3  # given: kept, even 0
    assert device_module.decode_workers(0, "cuda") == 0
    threads = torch.get_num_threads()
    for cores, cpu_want, cuda_want in [(2, max(0, 2 - threads), 1), (64, min(8, 64 - threads), 8)]:
        monkeypatch.setattr(device_module.os, "cpu_count", lambda cores=cores: cores)
        assert device_module.decode_workers(None, "cpu") == cpu_want
        assert device_module.decode_workers(None, torch.device("cuda")) == cuda_want
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: None)  # unknown: one core
    assert device_module.decode_workers(None, "cpu") == 0
