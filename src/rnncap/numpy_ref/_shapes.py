"""Shape checks for the NumPy layers: a wrong shape raises ValueError naming the argument.

A spec such as "N T D" or "H 4H" names each axis; the first array that shows an axis binds its size.
"""

from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"^(\d*)([A-Za-z]\w*)$|^(\d+)$")


def check_shapes(*specs: tuple[str, object, str]) -> dict[str, int]:
    """Check `(name, array, "N T D")` triples in order and return the axis sizes found.

    Raises ValueError("x: expected shape (N, T, D) = (2, 3, 4), got (2, 3)") on a mismatch.
    """
    sizes: dict[str, int] = {}
    for name, array, spec in specs:
        shape = np.shape(array)
        tokens = spec.split()
        pretty = "(" + ", ".join(tokens) + (",)" if len(tokens) == 1 else ")")
        if len(shape) != len(tokens):
            raise ValueError(f"{name}: expected shape {pretty}, got {shape}")
        expected = []
        for token, size in zip(tokens, shape, strict=True):
            match = _TOKEN.match(token)
            if match is None:
                raise AssertionError(f"bad shape spec {spec!r}")
            if match.group(3):  # a literal size
                expected.append(int(match.group(3)))
                continue
            factor = int(match.group(1) or 1)
            axis = match.group(2)
            if axis not in sizes and size % factor == 0:
                sizes[axis] = size // factor
            expected.append(factor * sizes[axis] if axis in sizes else -1)
        if tuple(expected) != tuple(shape):
            known = ["?" if e < 0 else str(e) for e in expected]
            known_text = "(" + ", ".join(known) + (",)" if len(known) == 1 else ")")
            raise ValueError(f"{name}: expected shape {pretty} = {known_text}, got {shape}")
    return sizes
