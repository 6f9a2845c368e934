"""The classic pretrained "Show and Tell" checkpoint (encoder/decoder-5-3000.pkl, vocab.pkl).

Loads them safely (tensors only; a restricted unpickler for the vocabulary) into ResNet-152 and a
decoder that runs rnncap's own LSTM with the decoder interface of `rnncap.decode.beam`; beam size
1 captions images the way the original sample.py did. `rnncap convert-show-tell` saves the
loaded model as a model folder (`rnncap.models.showtell_folder`) that `rnncap.load` takes.
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
from rnncap.utils.errors import ModelError

EMBED_SIZE = 256  # image feature and word vector size of the original model
HIDDEN_SIZE = 512  # LSTM hidden size
FEATURE_SIZE = 2048  # pooled ResNet-152 output
MAX_STEPS = 20  # words per caption at most, the decoding length of the original sample.py
IMAGE_SIZE = 224
ENCODER_NAME = "show_tell_resnet152"  # the encoder of `ShowTellConfig.encoder`, not a registry name


class ShowTellError(ModelError, ValueError):
    """A Show-and-Tell file that cannot be used; the one-line message names the file."""


# ---------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class ShowTellVocab:
    """The original vocabulary: word ids 0..V-1 (`<pad>`, `<start>`, `<end>`, `<unk>` first)."""

    word2idx: dict[str, int]
    idx2word: dict[int, str]

    def __len__(self) -> int:
        return len(self.word2idx)

    @property
    def itos(self) -> list[str]:
        """The words in id order."""
        return [self.idx2word[i] for i in range(len(self))]

    @property
    def stoi(self) -> dict[str, int]:
        return self.word2idx

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


def vocab_from_words(words: list, path: str | os.PathLike) -> ShowTellVocab:
    """The vocabulary of `words` in id order (a converted folder's vocab.json), checked as a
    pickled one; ShowTellError names `path`."""
    if not all(type(w) is str for w in words):
        raise ShowTellError(f"{path}: the words must be strings")
    state = {"word2idx": {w: i for i, w in enumerate(words)}, "idx2word": dict(enumerate(words))}
    return _vocab_from_state(state, Path(path))


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
    """ResNet-152 without its fc -> linear 2048 -> 256 -> BatchNorm1d, as in the original, with
    the original's preprocessing and the attributes of an rnncap `Encoder` (a pooled vector)."""

    name = ENCODER_NAME
    spatial = False
    image_size = IMAGE_SIZE
    device_preprocess = False  # LANCZOS has no GPU twin: files always take the PIL path

    def __init__(self, embed_size: int = EMBED_SIZE) -> None:
        super().__init__()
        from torchvision.models import ResNet152_Weights, resnet152

        self.resnet = nn.Sequential(*list(resnet152(weights=None).children())[:-1])
        self.linear = nn.Linear(FEATURE_SIZE, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)
        self.out_channels = embed_size
        # the original normalised with ImageNet statistics; take them from torchvision's weights
        transforms = ResNet152_Weights.IMAGENET1K_V1.transforms()
        self.mean, self.std = tuple(transforms.mean), tuple(transforms.std)

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image (any mode) -> (3, 224, 224): resize without crop (LANCZOS), normalise."""
        rgb = to_rgb(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
        return TF.normalize(TF.to_tensor(rgb), list(self.mean), list(self.std))

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


@dataclass(frozen=True)
class ShowTellConfig:
    """What the beam search (`rnncap.decode.beam`) reads of the decoder: the special ids and the
    caption length. The original sample.py could say any word of its vocabulary, `<pad>`,
    `<start>` and `<unk>` included, so the search's padding and start (its never-emitted ids)
    are one id past the vocabulary, V, whose log-probability is always -inf."""

    end_id: int
    no_word: int  # V
    max_length: int = MAX_STEPS
    encoder: str = ENCODER_NAME  # what a `Captioner` reports, as for a `CaptionerConfig`
    cell_type: str = "lstm"

    @property
    def pad_id(self) -> int:
        return self.no_word

    @property
    def start_id(self) -> int:
        return self.no_word

    @property
    def unk_id(self) -> int:
        return self.no_word


class DecoderRNN(nn.Module):
    """Word embedding, rnncap's LSTM and the output projection of the original decoder.

    It has the decoder interface of `rnncap.decode.beam`: `init_state(features)` and
    `step(tokens, state)` over V + 1 ids (see `ShowTellConfig`). As in the original, the image
    feature is the first LSTM input (the step given the search's start, id V) and the state
    starts at zero; each later step's input is the embedded word.
    """

    static_state = ()  # no entry of the state is shared by an image's hypotheses

    def __init__(
        self, embed: nn.Embedding, lstm: LSTM, linear: nn.Linear, config: ShowTellConfig
    ) -> None:
        super().__init__()
        self.embed = embed
        self.lstm = lstm
        self.linear = linear
        self.config = config

    @classmethod
    def from_torch(cls, decoder: _TorchDecoder, config: ShowTellConfig) -> DecoderRNN:
        return cls(decoder.embed, LSTM.from_torch(decoder.lstm), decoder.linear, config)

    def init_state(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features (N, E) -> (h (N, H), c (N, H), features (N, E)), h and c zero."""
        h = features.new_zeros(features.shape[0], self.lstm.hidden_size)  # (N, H)
        return h, torch.zeros_like(h), features

    def step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple, None]:
        """tokens (B,), state -> (log_probs (B, V + 1), new state, None: no attention).

        The input is the row's image feature where the token is the search's start (id V), else
        the word's embedding; id V is never said (log-probability -inf).
        """
        h, c, features = state
        first = tokens == self.config.start_id  # (B,)
        words = self.embed(tokens.masked_fill(first, 0))  # (B, E)
        inputs = torch.where(first[:, None], features, words)  # (B, E)
        h, c = self.lstm.step(inputs, h, c)
        log_probs = torch.log_softmax(self.linear(h), dim=-1)  # (B, V)
        never = log_probs.new_full((log_probs.shape[0], 1), float("-inf"))  # (B, 1): id V
        return torch.cat([log_probs, never], 1), (h, c, features), None


class ShowTell(nn.Module):
    """The loaded checkpoint: `preprocess(pil_image)`, `encode(images)` and the `decoder`.

    It is itself a decoder of `rnncap.decode.beam` (its `config`, `init_state` and `step` are the
    decoder's), so a `rnncap.Captioner` captions with it as with a `CaptioningRNN`.
    """

    static_state = ()  # no entry of the state is shared by an image's hypotheses

    def __init__(self, encoder: EncoderCNN, decoder: DecoderRNN, vocab: ShowTellVocab) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.vocab = vocab
        self.requires_grad_(False)
        self.eval()

    @property
    def config(self) -> ShowTellConfig:
        return self.decoder.config

    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image (any mode) -> (3, 224, 224), as the original sample.py."""
        return self.encoder.preprocess(image)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """images (N, 3, 224, 224) -> features (N, E), the decoder's first input."""
        return self.encoder(images)

    def init_state(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.decoder.init_state(features)

    def step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple, None]:
        return self.decoder.step(tokens, state)


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
    config = ShowTellConfig(end_id=vocab.word2idx["<end>"], no_word=len(vocab))
    decoder = DecoderRNN.from_torch(torch_decoder, config)

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
