"""Helpers shared by the tests: tiny data sets and models, reference decoders, CUDA tolerances.

`tests/` is on sys.path (pytest puts the folder of the root conftest.py there), so a test
imports them as `from support.tinydata import make_dataset`.
"""
