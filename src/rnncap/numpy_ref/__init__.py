"""The NumPy reference (numpy only, never torch): RNN, LSTM, attention LSTM, captioning layers,
a NumPy captioner with its optimisers, and centred-difference gradient checking."""

from rnncap.numpy_ref.attention import (
    attention_backward,
    attention_forward,
    attention_lstm_backward,
    attention_lstm_forward,
    attention_lstm_step_backward,
    attention_lstm_step_forward,
    softmax,
)
from rnncap.numpy_ref.captioning import CELL_TYPES, NumpyCaptioner, NumpyCaptionerConfig
from rnncap.numpy_ref.gradcheck import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from rnncap.numpy_ref.layers import (
    affine_backward,
    affine_forward,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)
from rnncap.numpy_ref.lstm import (
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
    sigmoid,
)
from rnncap.numpy_ref.optim import Adam, SGDMomentum
from rnncap.numpy_ref.rnn import rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward

__all__ = [
    "CELL_TYPES",
    "Adam",
    "NumpyCaptioner",
    "NumpyCaptionerConfig",
    "SGDMomentum",
    "affine_backward",
    "affine_forward",
    "attention_backward",
    "attention_forward",
    "attention_lstm_backward",
    "attention_lstm_forward",
    "attention_lstm_step_backward",
    "attention_lstm_step_forward",
    "eval_numerical_gradient",
    "eval_numerical_gradient_array",
    "lstm_backward",
    "lstm_forward",
    "lstm_step_backward",
    "lstm_step_forward",
    "rel_error",
    "rnn_backward",
    "rnn_forward",
    "rnn_step_backward",
    "rnn_step_forward",
    "sigmoid",
    "softmax",
    "temporal_affine_backward",
    "temporal_affine_forward",
    "temporal_softmax_loss",
    "word_embedding_backward",
    "word_embedding_forward",
]
