"""rnncap.models.showtell: the original checkpoint's file layout, strict loading, safe vocab.pkl.

The reference is the original tutorial code (EncoderCNN/DecoderRNN with torch.nn.LSTM and its
`sample` loop), written out independently of rnncap in `support.showtell`.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from rnncap.decode.beam import DecodeOptions, decode
from rnncap.decode.captioner import Captioner
from rnncap.models.showtell import (
    EncoderCNN,
    ShowTellError,
    load_show_tell,
    load_state_dict_strict,
    load_vocab_pkl,
)
from support.showtell import (
    dump_vocab,
    make_vocab,
    photos,
    reference_caption,
    write_original,
)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The original files, the reference modules and features, and the files loaded."""
    files = write_original(tmp_path_factory.mktemp("showtell"))
    paths = files.paths
    files.model = load_show_tell(paths["encoder"], paths["decoder"], paths["vocab"], device="cpu")
    return files


# ---------------------------------------------------------------- tests


def test_captions_equal_the_original_pipeline(original):
    with torch.no_grad():
        expected_ids = original.decoder.sample(original.features)
    expected = [reference_caption(row, original.vocab) for row in expected_ids.tolist()]

    model = original.model
    greedy = Captioner(model, model.vocab, DecodeOptions(beam_size=1), backend=None)
    captions = [caption.text for caption in greedy(photos())]
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
