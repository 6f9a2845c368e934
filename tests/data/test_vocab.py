"""The vocabulary: tokenisation, frequency threshold, special ids, encode/decode and JSON files."""

import json

import pytest

from rnncap.data.vocab import Vocabulary, tokenize


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("A dog's  ball, RED-and-blue .") == [
        "a",
        "dog",
        "s",
        "ball",
        "red",
        "and",
        "blue",
    ]
    assert tokenize("2 kids\tplay\n") == ["2", "kids", "play"]
    assert tokenize(" . ") == []


def test_build_keeps_words_at_min_count_most_frequent_first():
    captions = ["a dog runs", "A dog sits", "a cat", "the dog"]
    vocab = Vocabulary.build(captions, min_count=2)
    # counts: a=3, dog=3, runs/sits/cat/the=1 -> kept a, dog (tie broken alphabetically)
    assert vocab.itos == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
    assert len(vocab) == 6
    assert len(Vocabulary.build(captions, min_count=1)) == 4 + 6


def test_special_ids():
    vocab = Vocabulary.build(["x"])
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]


def test_encode_adds_start_end_and_maps_unknown_words():
    vocab = Vocabulary(["a", "dog"])
    assert vocab.encode("A dog, a CAT.") == [1, 4, 5, 4, 3, 2]
    assert vocab.encode("") == [1, 2]


def test_decode_stops_at_end_and_drops_specials():
    vocab = Vocabulary(["a", "dog"])
    assert vocab.decode([1, 4, 3, 5, 2, 4, 4, 0]) == "a dog"
    assert vocab.decode([4, 5]) == "a dog"
    assert vocab.decode([0, 0]) == ""


def test_decode_accepts_tensors():
    torch = pytest.importorskip("torch")
    vocab = Vocabulary(["a", "dog"])
    assert vocab.decode(torch.tensor([1, 5, 4, 2, 5])) == "dog a"


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["a man rides a horse", "a horse"], min_count=1)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text())["tokens"][:6] == [
        "<pad>",
        "<start>",
        "<end>",
        "<unk>",
        "a",
        "horse",
    ]
    loaded = Vocabulary.load(path)
    assert loaded == vocab
    assert loaded.encode("a horse") == vocab.encode("a horse")


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"tokens": ["a", "b"]}')
    with pytest.raises(ValueError, match="not a vocabulary"):
        Vocabulary.load(path)


def test_duplicate_words_rejected():
    with pytest.raises(ValueError):
        Vocabulary(["a", "a"])
