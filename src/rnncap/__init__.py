"""rnncap: image captioning with recurrent networks, every recurrent piece written out and verified.

`rnncap.numpy_ref` is the NumPy reference, `rnncap.nn` the PyTorch modules written from scratch.
"""

__version__ = "0.1.0"
