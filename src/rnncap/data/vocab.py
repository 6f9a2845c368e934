"""The word vocabulary: tokenisation, the four special tokens, and a JSON file format.

Ids 0..3 are `<pad>`, `<start>`, `<end>`, `<unk>`; words follow, most frequent first.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rnncap.utils.io import MAX_VOCAB_BYTES, InvalidFileError, read_json_file

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case `text` and split it on every run of non-alphanumeric characters."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """A bijection between words and integer ids; specials first (`<pad>`=0 ... `<unk>`=3)."""

    def __init__(self, words: Sequence[str]):
        """`words` are the ordinary words in id order; the specials are prepended."""
        duplicates = [w for w, n in Counter(words).items() if n > 1]
        if duplicates or any(w in SPECIALS for w in words):
            raise ValueError(f"vocabulary words must be unique and not special: {duplicates[:5]}")
        self.itos: list[str] = [*SPECIALS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every word that occurs at least `min_count` times, most frequent first (ties: a-z)."""
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = [w for w, n in counts.items() if n >= min_count and w not in SPECIALS]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, text: str) -> list[int]:
        """`<start>`, the ids of the tokens of `text` (`<unk>` for unknown words), `<end>`."""
        ids = [self.stoi.get(word, self.unk_id) for word in tokenize(text)]
        return [self.start_id, *ids, self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of `ids` joined by spaces, stopping at `<end>` and dropping special tokens.

        Accepts any iterable of ints (a list, or a 1-d tensor / array).
        """
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i >= len(SPECIALS):
                words.append(self.itos[i])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON: `{"tokens": [...]}` in id order, specials included."""
        Path(path).write_text(json.dumps({"tokens": self.itos}, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by `save`; InvalidFileError (a ValueError) when it is not one."""
        try:
            data = read_json_file(path, MAX_VOCAB_BYTES)
        except FileNotFoundError:
            raise InvalidFileError(path, "no such file") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise InvalidFileError(
                path, f"not a vocabulary file (expected tokens starting {', '.join(SPECIALS)})"
            )
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise InvalidFileError(path, f"tokens must be non-empty strings, found {token!r}")
        try:
            return cls(tokens[len(SPECIALS) :])
        except ValueError as error:
            raise InvalidFileError(path, str(error)) from None
