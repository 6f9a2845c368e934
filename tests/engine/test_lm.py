"""The caption language model: a short training lowers perplexity, sampling, the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnncap.cli import main
from rnncap.data.vocab import Vocabulary
from rnncap.engine import lm_train
from rnncap.models import lm
from rnncap.nn import RNN

CORPUS = [
    "A dog runs on the grass .",
    "A black dog runs in the park .",
    "Two children play on the beach .",
    "A man rides a bike on the road .",
    "A girl in a red dress jumps .",
    "The dog jumps over a log .",
    "A woman walks on the beach .",
    "Children play in the park .",
]


def _model(cell: str, vocab: Vocabulary) -> lm.LanguageModel:
    torch.manual_seed(0)
    config = lm.LMConfig(cell=cell, vocab_size=len(vocab), embed_dim=16, hidden_dim=16, dropout=0.0)
    return lm.LanguageModel(config)


@pytest.mark.parametrize("cell", lm.CELLS)
def test_one_batch_training_lowers_perplexity(cell):
    vocab = Vocabulary.build(CORPUS, min_count=1)
    seqs = lm_train.encode_captions(CORPUS, vocab)
    model = _model(cell, vocab)
    config = lm_train.LMTrainConfig(epochs=4, batch_size=len(seqs), lr=1e-2, model=model.config)
    history = lm_train.train(model, seqs, seqs, config, vocab.pad_id, max_batches=1, progress=False)
    assert all(math.isfinite(p) for p in history.epoch_val_ppl)
    # untrained, the model is close to uniform over the vocabulary
    assert history.epoch_train_ppl[0] == pytest.approx(len(vocab), rel=0.3)
    ppl = history.epoch_val_ppl
    assert all(ppl[k + 1] < ppl[k] for k in range(len(ppl) - 1))


def test_perplexity_of_uniform_model_is_vocabulary_size():
    vocab = Vocabulary.build(CORPUS, min_count=1)
    model = _model("lstm", vocab)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    ppl = lm_train.perplexity(model, lm_train.encode_captions(CORPUS, vocab), vocab.pad_id)
    assert ppl == pytest.approx(len(vocab), rel=1e-5)


@pytest.mark.parametrize("cell", lm.CELLS)
def test_sampling_reproduces_a_memorised_sentence(cell):
    sentence = "a dog runs on the grass"
    vocab = Vocabulary.build([sentence], min_count=1)
    seqs = lm_train.encode_captions([sentence] * 4, vocab)
    model = _model(cell, vocab)
    config = lm_train.LMTrainConfig(epochs=1, batch_size=4, lr=3e-2, model=model.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = next(lm_train.batches(seqs, 4, vocab.pad_id))
    for _ in range(60):
        loss, _ = lm_train.batch_loss(model, batch, vocab.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    samples = lm_train.sample(
        model, vocab, 3, temperature=0.05, generator=torch.Generator().manual_seed(0)
    )
    assert samples == [sentence] * 3


def _toy_flickr8k(root):
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    names = [f"img{i}.jpg" for i in range(4)]
    for i, name in enumerate(names):
        (root / "Images" / name).write_bytes(b"")
        lines += [f"{name},{CORPUS[(2 * i + k) % len(CORPUS)]}" for k in range(2)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:3]) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text(names[3] + "\n")


def test_cli_trains_saves_and_samples(tmp_path, capsys):
    _toy_flickr8k(tmp_path / "data")
    out = tmp_path / "run"
    args = [
        "lm",
        "--data",
        str(tmp_path / "data"),
        "--cell",
        "rnn",
        "--epochs",
        "2",
        "--embed",
        "8",
        "--hidden",
        "8",
        "--min-count",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--sample",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    for name in ("model.safetensors", "config.json", "vocab.json", "history.json", "curve.png"):
        assert (out / name).is_file()
    trained = capsys.readouterr().out.split("\n")[-3:-1]  # the 2 sampled sentences

    # The saved model samples exactly what the trained one did with the same seed (--seed 0):
    # weights, configuration and vocabulary survive the round trip.
    model, vocab = lm_train.load(out, torch.device("cpu"))
    assert isinstance(model.rnn, RNN) and model.config.cell == "rnn"
    again = lm_train.sample(model, vocab, 2, generator=torch.Generator().manual_seed(0))
    assert again == trained
    assert main(["lm", "--load", str(out), "--sample", "2"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == trained
    history = json.loads((out / "history.json").read_text())
    dev = lm_train.encode_captions(CORPUS[6:8], vocab)  # the dev image img3's two captions
    ppl = lm_train.perplexity(model, dev, vocab.pad_id)
    assert ppl == pytest.approx(history["epoch_val_ppl"][-1], rel=1e-5)


def test_cli_reports_missing_data(tmp_path, capsys):
    assert main(["lm", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"rnncap: error: {tmp_path / 'nowhere'}: no such file or directory\n"
    assert not (tmp_path / "o").exists()


def test_cli_trains_on_caption_text_with_a_given_vocabulary(tmp_path, capsys):
    from rnncap.data.vocab import Vocabulary

    vocab = Vocabulary(["a", "cat", "on", "bed", "cup", "of", "coffee"])
    vocab.save(tmp_path / "vocab.json")
    groups = [["a cat on a bed", "a cat"], ["a cup of coffee", "coffee on a bed"]] * 20
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"captions": g}) + "\n" for g in groups))
    out = tmp_path / "lm"
    args = [
        "lm",
        "--text",
        str(text),
        "--vocab",
        str(tmp_path / "vocab.json"),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.02",
        "--embed",
        "8",
        "--hidden",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--sample",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    model, saved = lm_train.load(out, torch.device("cpu"))
    assert saved == vocab  # the given vocabulary, not one built from the text
    history = json.loads((out / "history.json").read_text())
    assert history["epoch_val_ppl"][-1] < 0.5 * len(vocab)  # it learned the text
    assert main(["lm", "--text", str(text), "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err
