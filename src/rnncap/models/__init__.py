"""Models: image encoders, the captioner, the language model, Show and Tell, model folders.

`rnncap.models.captioner`, `.encoders`, `.lm`, `.showtell` and `.folder`; import the one you need.
"""
