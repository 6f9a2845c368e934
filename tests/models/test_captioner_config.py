"""The torch-free captioner config against the torch model it describes."""

from __future__ import annotations

import pytest
import torch

from rnncap.models.captioner_config import CELL_TYPES, CaptionerConfig
from rnncap.models.captioning_rnn import CaptioningRNN, list_cell_types


def test_cell_types_are_the_registered_cells():
    assert list(CELL_TYPES) == list_cell_types()


@pytest.mark.parametrize("cell_type", CELL_TYPES)
@pytest.mark.parametrize("deep_output", [False, True])
def test_parameter_count_is_the_models(cell_type, deep_output):
    config = CaptionerConfig(
        feature_dim=12,
        cell_type=cell_type,
        wordvec_dim=5,
        hidden_dim=7,
        vocab_size=11,
        deep_output=deep_output,
    )
    with torch.device("meta"):
        expected = sum(p.numel() for p in CaptioningRNN(config).parameters())
    assert config.num_parameters() == expected
