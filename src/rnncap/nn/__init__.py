"""PyTorch modules written from scratch: recurrent cells, attention and the captioning loss."""

from rnncap.nn.attention import AttentionLSTM, dot_product_attention
from rnncap.nn.loss import attention_penalty, captioning_loss, temporal_softmax_loss
from rnncap.nn.lstm import LSTM
from rnncap.nn.rnn import RNN

__all__ = [
    "RNN",
    "LSTM",
    "AttentionLSTM",
    "dot_product_attention",
    "temporal_softmax_loss",
    "captioning_loss",
    "attention_penalty",
]
