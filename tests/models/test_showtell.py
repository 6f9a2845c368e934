"""rnncap.models.showtell: the original checkpoint's file layout, strict loading, safe vocab.pkl.

The reference is the original tutorial code (EncoderCNN/DecoderRNN with torch.nn.LSTM and its
`sample` loop), written out below independently of rnncap.
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models, transforms

from rnncap.decode.beam import DecodeOptions, decode
from rnncap.decode.showtell import caption_images
from rnncap.models.showtell import (
    EncoderCNN,
    ShowTellError,
    load_show_tell,
    load_state_dict_strict,
    load_vocab_pkl,
)

WORDS = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(26)]  # V = 30


# ---------------------------------------------------------------- the original code (reference)


class Vocabulary:
    """As in the tutorial's build_vocab.py."""

    def __init__(self):
        self.word2idx = {}
        self.idx2word = {}
        self.idx = 0

    def add_word(self, word):
        if word not in self.word2idx:
            self.word2idx[word] = self.idx
            self.idx2word[self.idx] = word
            self.idx += 1

    def __len__(self):
        return len(self.word2idx)


class ReferenceEncoder(nn.Module):
    def __init__(self, embed_size=256):
        super().__init__()
        resnet = models.resnet152(weights=None)
        self.resnet = nn.Sequential(*list(resnet.children())[:-1])
        self.linear = nn.Linear(resnet.fc.in_features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images):
        features = self.resnet(images)
        features = features.reshape(features.size(0), -1)
        return self.bn(self.linear(features))


class ReferenceDecoder(nn.Module):
    def __init__(self, vocab_size, embed_size=256, hidden_size=512):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, 1, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)

    def sample(self, features, states=None):
        sampled_ids = []
        inputs = features.unsqueeze(1)
        for _ in range(20):
            hiddens, states = self.lstm(inputs, states)  # (N, 1, H)
            outputs = self.linear(hiddens.squeeze(1))  # (N, V)
            _, predicted = outputs.max(1)
            sampled_ids.append(predicted)
            inputs = self.embed(predicted).unsqueeze(1)  # (N, 1, E)
        return torch.stack(sampled_ids, 1)  # (N, 20)


def reference_caption(ids, vocab):
    words = []
    for word_id in ids:
        word = vocab.idx2word[word_id]
        if word == "<end>":
            break
        if word != "<start>":
            words.append(word)
    return " ".join(words)


def make_vocab():
    vocab = Vocabulary()
    for word in WORDS:
        vocab.add_word(word)
    return vocab


def dump_vocab(vocab, path, module="build_vocab", protocol=pickle.DEFAULT_PROTOCOL):
    """Pickle as a script would: the class recorded under `module` (e.g. __main__)."""
    fake = types.ModuleType(module) if module not in sys.modules else sys.modules[module]
    cls = type("Vocabulary", (), {"__module__": module})
    saved = (sys.modules.get(module), getattr(fake, "Vocabulary", None))
    sys.modules[module] = fake
    fake.Vocabulary = cls
    try:
        obj = cls.__new__(cls)
        obj.__dict__.update(vars(vocab))
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    finally:
        if saved[0] is None:
            del sys.modules[module]
        elif saved[1] is None:
            del fake.Vocabulary
        else:
            fake.Vocabulary = saved[1]


def _photos():
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(100), np.arange(90)).astype(np.uint8)
    return [
        Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)),
        Image.fromarray(ramp, mode="L"),
    ]


def reference_preprocess(photo):
    """The original sample.py: RGB, resize to 224 x 224 with LANCZOS, ImageNet normalisation."""
    return transforms.Compose(
        [
            transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.LANCZOS),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )(photo.convert("RGB"))


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Random-weight files in exactly the original layout, the reference modules and features."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("showtell")
    vocab = make_vocab()
    encoder, decoder = ReferenceEncoder().eval(), ReferenceDecoder(len(vocab)).eval()
    images = torch.stack([reference_preprocess(photo) for photo in _photos()])
    with torch.no_grad():
        # keep a random ResNet-152's activations bounded (residual branches scaled down), and
        # give BatchNorm1d the statistics of these images, so that different images get
        # different captions
        for block in encoder.resnet.modules():
            if isinstance(block, models.resnet.Bottleneck):
                block.bn3.weight.mul_(0.2)
        projected = encoder.linear(encoder.resnet(images).flatten(1))  # (2, 256)
        encoder.bn.running_mean.copy_(projected.mean(0))
        encoder.bn.running_var.copy_(projected.var(0) + 1e-3)
        features = encoder.bn(projected)  # == encoder(images) (N, 256)
    old_style = {k: v for k, v in encoder.state_dict().items() if "num_batches_tracked" not in k}
    paths = {
        "encoder": folder / "encoder-5-3000.pkl",
        "decoder": folder / "decoder-5-3000.pkl",
        "vocab": folder / "vocab.pkl",
    }
    torch.save(old_style, paths["encoder"])
    # the 2018 files predate the zip format: keep one of them in the legacy format
    torch.save(decoder.state_dict(), paths["decoder"], _use_new_zipfile_serialization=False)
    dump_vocab(vocab, paths["vocab"])
    model = load_show_tell(paths["encoder"], paths["decoder"], paths["vocab"], device="cpu")
    return types.SimpleNamespace(
        paths=paths, vocab=vocab, features=features, decoder=decoder, model=model
    )


# ---------------------------------------------------------------- tests


def test_captions_equal_the_original_pipeline(original):
    with torch.no_grad():
        expected_ids = original.decoder.sample(original.features)
    expected = [reference_caption(row, original.vocab) for row in expected_ids.tolist()]

    captions = caption_images(original.model, _photos())  # beam size 1 by default
    assert captions == expected
    assert len(set(captions)) == 2 and all(len(c.split()) >= 2 for c in captions)
    assert not original.model.training and not original.model.encoder.bn.training


def _until_end(row: list[int], end_id: int) -> list[int]:
    return row[: row.index(end_id)] if end_id in row else row


def test_beam_one_decodes_like_the_original_greedy_loop(original):
    """The decoder runs rnncap's LSTM through the one beam search; at beam size 1, on many
    random features, it says what nn.LSTM's greedy loop says, up to <end> (words such as
    <pad> and <unk> included, as the original could say them)."""
    torch.manual_seed(1)
    features = torch.randn(64, 256)
    end_id = original.vocab.word2idx["<end>"]
    with torch.no_grad():
        expected = original.decoder.sample(features).tolist()
    got = decode(original.model.decoder, features, DecodeOptions(beam_size=1)).tokens
    assert type(original.model.decoder.lstm).__module__ == "rnncap.nn.lstm"
    assert got == [_until_end(row, end_id) for row in expected]
    assert len({w for row in got for w in row}) > 5  # many different words were chosen
    got_text = [original.model.vocab.decode(row) for row in got]
    assert got_text == [reference_caption(row, original.vocab) for row in expected]


def reference_log_prob(decoder, feature, words: list[int], end_id: int) -> float:
    """log p(words, then <end> unless 20 words were said) under the original decoder."""
    targets = words + ([end_id] if len(words) < 20 else [])
    inputs, states, total = feature[None, None], None, 0.0
    for word in targets:
        hiddens, states = decoder.lstm(inputs, states)
        total += float(torch.log_softmax(decoder.linear(hiddens[0, 0]), 0)[word])
        inputs = decoder.embed(torch.tensor([[word]]))
    return total


def test_beam_scores_are_the_original_decoders_log_probabilities(original):
    torch.manual_seed(2)
    features = torch.randn(8, 256)
    end_id = original.vocab.word2idx["<end>"]
    wide = decode(original.model.decoder, features, DecodeOptions(beam_size=4))
    with torch.no_grad():
        for feature, words, score in zip(features, wide.tokens, wide.scores, strict=True):
            expected = reference_log_prob(original.decoder, feature, words, end_id)
            assert score == pytest.approx(expected, abs=1e-4)


def test_decode_strips_start_and_stops_at_end(original):
    vocab = original.model.vocab
    ids = [vocab.word2idx[w] for w in ["<start>", "w3", "<unk>", "w7", "<end>", "w1"]]
    assert vocab.decode(ids) == "w3 <unk> w7"


@pytest.mark.parametrize("module", ["__main__", "build_vocab"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_vocab_pickles_from_scripts_load(tmp_path, module, protocol):
    path = tmp_path / "vocab.pkl"
    dump_vocab(make_vocab(), path, module=module, protocol=protocol)
    vocab = load_vocab_pkl(path)
    assert len(vocab) == 30 and vocab.idx2word[2] == "<end>" and vocab.word2idx["w0"] == 4


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


@pytest.mark.parametrize("nested", [False, True])
def test_malicious_vocab_pickle_runs_nothing(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = _RunsShell(f"touch {marker}")
    if nested:  # hidden inside an otherwise valid Vocabulary
        vocab = make_vocab()
        vocab.idx2word[99] = payload
        payload = vocab
    path = tmp_path / "vocab.pkl"
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    assert b"system" in path.read_bytes()
    with pytest.raises(ShowTellError, match="refused to load .*system") as info:
        load_vocab_pkl(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()

    with open(path, "wb") as f:
        pickle.dump(_Evaluates(marker), f)
    with pytest.raises(ShowTellError, match="refused to load builtins.eval"):
        load_vocab_pkl(path)
    assert not marker.exists()


def test_bad_vocab_contents(tmp_path):
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps({"word2idx": {}}))
    with pytest.raises(ShowTellError, match="not a Vocabulary"):
        load_vocab_pkl(path)
    vocab = make_vocab()
    del vocab.word2idx["<end>"], vocab.idx2word[2]
    dump_vocab(vocab, path)
    with pytest.raises(ShowTellError, match="disagree or leave gaps"):
        load_vocab_pkl(path)


def test_decoder_file_checked_key_by_key(original, tmp_path):
    paths = original.paths
    good = torch.load(paths["decoder"], weights_only=True)

    def load_with(state):
        path = tmp_path / "decoder.pkl"
        torch.save(state, path)
        with pytest.raises(ShowTellError) as info:
            load_show_tell(paths["encoder"], path, paths["vocab"])
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        return str(info.value)

    wrong_v = dict(good, **{"linear.bias": torch.zeros(31)})
    assert "linear.bias has shape [31], expected [30]" in load_with(wrong_v)
    missing = {k: v for k, v in good.items() if k != "lstm.weight_hh_l0"}
    assert "missing key lstm.weight_hh_l0" in load_with(missing)
    extra = dict(good, **{"lstm.weight_ih_l1": torch.zeros(2048, 512)})
    assert "unexpected key lstm.weight_ih_l1" in load_with(extra)
    assert "weights_only" in load_with({"linear.bias": _RunsShell("true")})


def test_encoder_state_checked_key_by_key(original):
    with torch.device("meta"):
        target = EncoderCNN()
    state = torch.load(original.paths["encoder"], weights_only=True, mmap=True)
    assert not any(k.endswith("num_batches_tracked") for k in state)  # old-style file
    bad_shape = dict(state, **{"resnet.4.0.conv1.weight": torch.zeros(64, 64, 3, 3)})
    with pytest.raises(ShowTellError, match=r"resnet\.4\.0\.conv1\.weight has shape"):
        load_state_dict_strict(target, bad_shape, "enc.pkl")
    missing = {k: v for k, v in state.items() if k != "bn.running_var"}
    with pytest.raises(ShowTellError, match="enc.pkl: missing key bn.running_var"):
        load_state_dict_strict(target, missing, "enc.pkl")


def test_missing_file(original, tmp_path):
    with pytest.raises(ShowTellError, match="no such file"):
        load_show_tell(tmp_path / "nope.pkl", original.paths["decoder"], original.paths["vocab"])
