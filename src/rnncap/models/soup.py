"""Weight averaging: several models fine-tuned from one starting point -> one model holding the
mean of each weight (a "model soup", Wortsman et al. 2022). Same size and speed as any one of
them; it only makes sense for runs that share their initial weights (e.g. two self-critical runs
from the same cross-entropy model), whose weights stay close enough for the mean to work.
"""

from __future__ import annotations

from pathlib import Path

from rnncap.data.vocab import Vocabulary
from rnncap.models.captioning_rnn import CaptioningRNN
from rnncap.models.folder import (
    IncompatibleModelError,
    read_captioner_config,
    read_vocabulary,
    read_weights,
    resolve_model_dir,
)
from rnncap.utils.config import ConfigError


def average_models(specs) -> tuple[CaptioningRNN, Vocabulary, list[Path]]:
    """The mean of the models' weights -> (model in eval mode, vocabulary, the folders used).

    Every model must have the same captioner config and the same vocabulary (an
    IncompatibleModelError names the first folder that differs). Weights are summed in float64,
    returned as float32.
    """
    folders = [resolve_model_dir(spec) for spec in specs]
    if not folders:
        raise ConfigError("models", "no model to average")
    config = read_captioner_config(folders[0])
    vocab = read_vocabulary(folders[0], config)
    total = {k: v.double() for k, v in read_weights(folders[0], config).items()}
    for folder in folders[1:]:
        other = read_captioner_config(folder)
        if other != config:
            first = config.to_dict()
            field = next(k for k, v in other.to_dict().items() if first[k] != v)
            raise IncompatibleModelError(
                f"model {folder}: captioner {field} is {getattr(other, field)!r}, "
                f"{folders[0]} has {getattr(config, field)!r}: only the same model can be averaged"
            )
        if read_vocabulary(folder, other) != vocab:
            raise IncompatibleModelError(
                f"model {folder}: its vocabulary differs from that of {folders[0]}"
            )
        for name, weight in read_weights(folder, other).items():
            total[name] += weight.double()
    model = CaptioningRNN(config)
    model.load_state_dict({k: (v / len(folders)).float() for k, v in total.items()}, strict=True)
    return model.eval(), vocab, folders
