"""Data for captioning: the vocabulary, the caption data sets and the encoder feature cache.

`rnncap.data.vocab`, `rnncap.data.datasets` and `rnncap.data.features`; import the one you need.
"""
