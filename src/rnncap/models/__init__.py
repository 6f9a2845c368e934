"""Models: image encoders, the captioner, the language model, Show and Tell, model folders.

`rnncap.models.captioning_rnn`, `.encoders`, `.onnx_encoder`, `.lm`, `.showtell` and `.folder`;
import the one you need.
"""
