"""Comparing float32 results (CUDA or CPU) with a float64 reference, with tolerances derived from
float32 rounding rather than picked by hand.

A float32 result computed through `terms` rounded operations is off by about
u * sqrt(terms) * (size of the values) when the rounding errors add up like a random walk
(u = 2^-24, float32's unit roundoff: half the spacing of float32 numbers at 1). Two float32
implementations of the same maths (ours and torch.nn, or CPU and CUDA) are each off by about
that much, in different directions.
So a result passes when its error against float64 is within a small factor of the trusted
implementation's own error, or below that random-walk size when the trusted one happens to be
nearly exact.
"""

from __future__ import annotations

import math

import pytest
import torch

U32 = torch.finfo(torch.float32).eps / 2  # 2^-24, float32's unit roundoff
U_TF32 = 2.0**-11  # TensorFloat-32 keeps 10 mantissa bits
FACTOR = 4  # two independent float32 errors rarely differ by more than this


def devices():
    """["cpu", "cuda"] as pytest parameters, the CUDA one marked `gpu` (skipped without CUDA)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double().cpu() - want.detach().double().cpu()).abs().max())


def rounding_size(want: torch.Tensor, terms: int, unit: float = U32) -> float:
    """unit * sqrt(terms) * max |want|: the random-walk size of accumulated rounding errors."""
    return unit * math.sqrt(terms) * float(want.detach().abs().max())


def assert_error_like(
    name: str, got: torch.Tensor, trusted: torch.Tensor, want: torch.Tensor, terms: int
) -> tuple[float, float]:
    """got's error against the float64 `want` is at most FACTOR x trusted's error, or the
    float32 rounding size; returns both errors."""
    error, trusted_error = max_error(got, want), max_error(trusted, want)
    floor = rounding_size(want, terms)
    assert error <= FACTOR * trusted_error + floor, (
        f"{name}: error {error:.3e} against float64; the trusted float32 result's is "
        f"{trusted_error:.3e}, the float32 rounding size {floor:.3e}"
    )
    return error, trusted_error


# ---------------------------------------------------------------- a recurrent layer vs torch.nn
SIZE = dict(N=16, T=12, D=32, H=64)  # the float32-against-float64 checks of RNN and LSTM


def recurrent_terms(names: list[str]) -> dict[str, int]:
    """Rounded operations behind each result of a recurrent layer at SIZE: a state (out, dx,
    dh0, ...) depends on T steps of D + H products each; a weight gradient (dW*, db) sums that
    over the N sequences."""
    steps = SIZE["T"] * (SIZE["D"] + SIZE["H"])
    return {n: SIZE["N"] * steps if n.startswith(("dW", "db")) else steps for n in names}


def assert_all_close(names, ours, ref, tol: float) -> None:
    """Each named result of ours equals ref's to `tol` (absolute and relative)."""
    for name, a, b in zip(names, ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


def assert_all_errors_like(names, ours, trusted, want) -> None:
    """`assert_error_like` for each named result, its terms from `recurrent_terms`."""
    terms = recurrent_terms(names)
    for name, got, t, w in zip(names, ours, trusted, want, strict=True):
        assert_error_like(name, got, t, w, terms[name])


def assert_all_within_rounding(names, ours, trusted, want, unit: float) -> None:
    """Each named result is off `want` by at most the rounding size of `unit` (e.g. TF32's)."""
    terms = recurrent_terms(names)
    for name, got, t, w in zip(names, ours, trusted, want, strict=True):
        bound = rounding_size(w, terms[name], unit)
        error, trusted_error = max_error(got, w), max_error(t, w)
        assert error <= bound, f"{name}: {error:.2e} > {bound:.2e} (torch.nn {trusted_error:.2e})"
