"""The model a training run starts from: a new one from the config's sizes, or the --init model
(its own sizes, cell type and weights; with grow_vocab, its vocabulary grown by the run's words)."""

from __future__ import annotations

import torch

from rnncap.data.vocab import Vocabulary
from rnncap.engine.splits import train_vocabulary
from rnncap.engine.train_config import TrainConfig
from rnncap.models.captioning_rnn import CaptionerConfig, CaptioningRNN
from rnncap.models.folder import IncompatibleModelError, load_model


def init_model(cfg: TrainConfig, vocab: Vocabulary | None) -> tuple[CaptioningRNN, Vocabulary]:
    """The --init model and the run's vocabulary: the model's own, or with grow_vocab its words
    then this run's new ones (`vocab`, when resuming, is the one the run already grew)."""
    from rnncap.models.regrow import grown_vocabulary, with_vocabulary

    model, init_vocab = load_model(cfg.init)
    if model.config.encoder != cfg.encoder:
        raise IncompatibleModelError(
            f"--init {cfg.init}: trained on {model.config.encoder} features, "
            f"not {cfg.encoder} (pass --encoder {model.config.encoder})"
        )
    if not cfg.grow_vocab:
        return model, vocab or init_vocab
    vocab = vocab or grown_vocabulary(init_vocab, train_vocabulary(cfg))
    return with_vocabulary(model, init_vocab, vocab, cfg.seed), vocab


def build_model(
    cfg: TrainConfig, feature_dim: int, vocab: Vocabulary, device, init: CaptioningRNN | None
) -> CaptioningRNN:
    """A new model from the flags, or the --init model (its own sizes, cell type and weights)."""
    if init is not None:
        if init.config.feature_dim != feature_dim:
            raise IncompatibleModelError(
                f"--init {cfg.init}: expects {init.config.feature_dim}-channel features, "
                f"the cache holds {feature_dim}"
            )
        if len(vocab) != init.config.vocab_size:
            raise IncompatibleModelError(
                f"--init {cfg.init}: its vocabulary differs from this run's"
            )
        return init.to(device)
    model_cfg = CaptionerConfig(
        encoder=cfg.encoder,
        feature_dim=feature_dim,
        cell_type=cfg.cell_type,
        wordvec_dim=cfg.wordvec_dim,
        hidden_dim=cfg.hidden_dim,
        vocab_size=len(vocab),
        max_length=cfg.max_length,
        dropout=cfg.dropout,
        deep_output=cfg.deep_output,
    )
    torch.manual_seed(cfg.seed)
    return CaptioningRNN(model_cfg).to(device)
