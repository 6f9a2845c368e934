"""The classic pretrained "Show and Tell" checkpoint (encoder/decoder-5-3000.pkl, vocab.pkl).

Loads them safely (tensors only; a restricted unpickler for the vocabulary) into ResNet-152 and a
decoder that runs rnncap's own LSTM, and captions images the way the original sample.py did.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn

from rnncap.data.images import to_rgb
from rnncap.nn.lstm import LSTM

EMBED_SIZE = 256  # image feature and word vector size of the original model
HIDDEN_SIZE = 512  # LSTM hidden size
FEATURE_SIZE = 2048  # pooled ResNet-152 output
MAX_STEPS = 20  # greedy decoding length of the original sample.py
IMAGE_SIZE = 224


class ShowTellError(ValueError):
    """A Show-and-Tell file that cannot be used; the one-line message names the file."""


# ---------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class ShowTellVocab:
    """The original vocabulary: word ids 0..V-1 (`<pad>`, `<start>`, `<end>`, `<unk>` first)."""

    word2idx: dict[str, int]
    idx2word: dict[int, str]

    def __len__(self) -> int:
        return len(self.word2idx)

    def decode(self, ids: Sequence[int]) -> str:
        """Word ids -> caption: `<start>` dropped, stops at `<end>` (as the original sample.py)."""
        words = []
        for i in ids:
            word = self.idx2word[int(i)]
            if word == "<end>":
                break
            if word != "<start>":
                words.append(word)
        return " ".join(words)


class _PickledVocabulary:
    """Stand-in for the pickled `Vocabulary` class: accepts only its plain-data state."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("Vocabulary state is not a dict")
        self.state = state


def _reconstructor(cls: type, base: type, state: object) -> _PickledVocabulary:
    """Safe copyreg._reconstructor (pickle protocols 0 and 1) that builds only the stand-in."""
    if cls is not _PickledVocabulary or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor may only build a Vocabulary")
    return _PickledVocabulary()


class _VocabularyUnpickler(pickle.Unpickler):
    """Builds a class named `Vocabulary` (from any module) out of dicts, strings and ints only."""

    def find_class(self, module: str, name: str):
        if name == "Vocabulary":
            return _PickledVocabulary
        # pickle protocols 0 and 1 (Python 2 names included) build plain objects through these
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstructor
        if module in ("builtins", "__builtin__") and name == "object":
            return object
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: only a Vocabulary of dicts, strings and ints "
            f"is allowed"
        )

    def persistent_load(self, pid: object):
        raise pickle.UnpicklingError("refused a persistent id")


def load_vocab_pkl(path: str | os.PathLike) -> ShowTellVocab:
    """Read the original `vocab.pkl` without running any code from it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _VocabularyUnpickler(f).load()
    except OSError as error:
        raise ShowTellError(f"{path}: cannot read ({error.strerror or error})") from None
    except Exception as error:  # UnpicklingError, EOFError, ... from a bad or hostile file
        raise ShowTellError(f"{path}: not a safe Vocabulary pickle: {_one_line(error)}") from None
    if not isinstance(obj, _PickledVocabulary):
        raise ShowTellError(f"{path}: holds a {type(obj).__name__}, not a Vocabulary object")
    return _vocab_from_state(obj.state, path)


def _vocab_from_state(state: dict, path: Path) -> ShowTellVocab:
    word2idx, idx2word = state.get("word2idx"), state.get("idx2word")
    if not isinstance(word2idx, dict) or not isinstance(idx2word, dict):
        raise ShowTellError(f"{path}: the Vocabulary lacks the word2idx and idx2word dicts")
    if not all(type(w) is str and type(i) is int for w, i in word2idx.items()):
        raise ShowTellError(f"{path}: word2idx must map strings to ints")
    if not all(type(i) is int and type(w) is str for i, w in idx2word.items()):
        raise ShowTellError(f"{path}: idx2word must map ints to strings")
    if set(idx2word) != set(range(len(word2idx))) or any(
        word2idx.get(w) != i for i, w in idx2word.items()
    ):
        raise ShowTellError(f"{path}: word2idx and idx2word disagree or leave gaps in 0..V-1")
    for special in ("<start>", "<end>"):
        if special not in word2idx:
            raise ShowTellError(f"{path}: the vocabulary has no {special} token")
    return ShowTellVocab(word2idx=dict(word2idx), idx2word=dict(idx2word))


# ---------------------------------------------------------------------------- the networks


class EncoderCNN(nn.Module):
    """ResNet-152 without its fc -> linear 2048 -> 256 -> BatchNorm1d, as in the original."""

    def __init__(self, embed_size: int = EMBED_SIZE) -> None:
        super().__init__()
        from torchvision.models import resnet152

        self.resnet = nn.Sequential(*list(resnet152(weights=None).children())[:-1])
        self.linear = nn.Linear(FEATURE_SIZE, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, 224, 224) -> features (N, E)."""
        features = self.resnet(images).flatten(1)  # (N, 2048)
        return self.bn(self.linear(features))  # (N, E)


class _TorchDecoder(nn.Module):
    """The original DecoderRNN layout, used only to check and load `decoder-*.pkl`."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED_SIZE)
        self.lstm = nn.LSTM(EMBED_SIZE, HIDDEN_SIZE, num_layers=1, batch_first=True)
        self.linear = nn.Linear(HIDDEN_SIZE, vocab_size)


class DecoderRNN(nn.Module):
    """Word embedding, rnncap's LSTM and the output projection of the original decoder."""

    def __init__(self, embed: nn.Embedding, lstm: LSTM, linear: nn.Linear) -> None:
        super().__init__()
        self.embed = embed
        self.lstm = lstm
        self.linear = linear

    @classmethod
    def from_torch(cls, decoder: _TorchDecoder) -> DecoderRNN:
        return cls(decoder.embed, LSTM.from_torch(decoder.lstm), decoder.linear)

    def sample(self, features: Tensor, max_steps: int = MAX_STEPS) -> Tensor:
        """Greedy decoding as the original: features (N, E) -> word ids (N, max_steps).

        The image feature is the first LSTM input and the state starts at zero; each step's
        best word is embedded and fed back.
        """
        h = features.new_zeros(features.shape[0], self.lstm.hidden_size)  # (N, H)
        c = torch.zeros_like(h)
        inputs = features  # (N, E)
        sampled = []
        for _ in range(max_steps):
            h, c = self.lstm.step(inputs, h, c)
            predicted = self.linear(h).argmax(dim=1)  # (N,)
            sampled.append(predicted)
            inputs = self.embed(predicted)  # (N, E)
        return torch.stack(sampled, dim=1)  # (N, max_steps)


class ShowTell(nn.Module):
    """The loaded checkpoint: `caption(pil_images) -> list[str]`."""

    def __init__(self, encoder: EncoderCNN, decoder: DecoderRNN, vocab: ShowTellVocab) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.vocab = vocab
        from torchvision.models import ResNet152_Weights

        # the original normalised with ImageNet statistics; take them from torchvision's weights
        transforms = ResNet152_Weights.IMAGENET1K_V1.transforms()
        self.mean, self.std = list(transforms.mean), list(transforms.std)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image (any mode) -> (3, 224, 224): resize without crop (LANCZOS), normalise."""
        rgb = to_rgb(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
        return TF.normalize(TF.to_tensor(rgb), self.mean, self.std)

    @torch.no_grad()
    def sample_ids(self, images: Tensor, max_steps: int = MAX_STEPS) -> Tensor:
        """images (N, 3, 224, 224) -> greedy word ids (N, max_steps)."""
        return self.decoder.sample(self.encoder(images), max_steps)

    def caption(self, images: Sequence[Image.Image], batch_size: int = 16) -> list[str]:
        """One caption per PIL image, without `<start>`/`<end>`."""
        device = self.decoder.linear.weight.device
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + batch_size]])
            ids = self.sample_ids(batch.to(device))
            captions += [self.vocab.decode(row) for row in ids.tolist()]
        return captions


# ---------------------------------------------------------------------------- loading


def load_show_tell(
    encoder_pkl: str | os.PathLike,
    decoder_pkl: str | os.PathLike,
    vocab_pkl: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> ShowTell:
    """Load the three original files strictly (every key and shape) onto `device`.

    Raises ShowTellError with a one-line message naming the file (and the key) on any problem.
    """
    vocab = load_vocab_pkl(vocab_pkl)  # the cheap files first: fail fast before the big one

    torch_decoder = _TorchDecoder(len(vocab))
    state = _load_tensors(decoder_pkl)
    load_state_dict_strict(
        torch_decoder, state, decoder_pkl, hint=f"the vocabulary has V = {len(vocab)} words"
    )
    decoder = DecoderRNN.from_torch(torch_decoder)

    with torch.device("meta"):  # no time spent initialising weights that are overwritten
        encoder = EncoderCNN()
    load_state_dict_strict(encoder, _load_tensors(encoder_pkl), encoder_pkl)
    return ShowTell(encoder, decoder, vocab).to(device)


def _load_tensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """torch.load(weights_only=True) of a state dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ShowTellError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for non-tensor content, RuntimeError, EOFError
        raise ShowTellError(
            f"{path}: not a state dict of tensors that torch.load(weights_only=True) accepts "
            f"({_one_line(error)})"
        ) from None
    if not isinstance(state, dict):
        raise ShowTellError(f"{path}: holds a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ShowTellError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
    return state


def load_state_dict_strict(
    module: nn.Module, state: dict[str, Tensor], path: str | os.PathLike, hint: str = ""
) -> None:
    """Check every key and shape of `state` against `module`, then load it (assign=True).

    A missing BatchNorm `num_batches_tracked` (files saved by old PyTorch) is accepted and set
    to 0. A missing, unexpected or wrongly shaped key raises ShowTellError naming it.
    """
    expected = module.state_dict()
    state = dict(state)
    hint = f" ({hint})" if hint else ""
    for key, target in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                state[key] = torch.zeros((), dtype=torch.long)
                continue
            raise ShowTellError(f"{path}: missing key {key} (shape {list(target.shape)}){hint}")
        if state[key].shape != target.shape:
            raise ShowTellError(
                f"{path}: {key} has shape {list(state[key].shape)}, expected "
                f"{list(target.shape)}{hint}"
            )
        if target.is_floating_point():
            state[key] = state[key].float()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ShowTellError(f"{path}: unexpected key {unexpected[0]} ({len(unexpected)} in all)")
    module.load_state_dict(state, strict=True, assign=True)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return text or type(error).__name__
