"""The original Show-and-Tell tutorial code (EncoderCNN/DecoderRNN with torch.nn.LSTM and its
`sample` loop, the pickled Vocabulary), written out independently of rnncap, and random-weight
checkpoint files in exactly the original layout, for the Show-and-Tell tests."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models, transforms

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


def photos():
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


def write_original(folder: Path) -> types.SimpleNamespace:
    """Random-weight files in exactly the original layout in `folder` -> paths (encoder,
    decoder, vocab), the reference vocab, features of `photos()` and decoder."""
    torch.manual_seed(0)
    vocab = make_vocab()
    encoder, decoder = ReferenceEncoder().eval(), ReferenceDecoder(len(vocab)).eval()
    images = torch.stack([reference_preprocess(photo) for photo in photos()])
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
    return types.SimpleNamespace(paths=paths, vocab=vocab, features=features, decoder=decoder)
