"""The paired bootstrap against its exact distribution, enumerated for a few images."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnncap.engine.bootstrap import paired_bootstrap, standard_error


def exact_resampled_differences(a: list[float], b: list[float]) -> np.ndarray:
    """Every one of the N**N equally likely resamples of N images, its mean difference."""
    n = len(a)
    return np.array(
        [sum(b[i] - a[i] for i in draw) / n for draw in itertools.product(range(n), repeat=n)]
    )


def test_matches_the_enumerated_bootstrap_distribution():
    a = [0.2, 0.9, 0.4, 0.1, 0.6]
    b = [0.5, 0.7, 0.8, 0.1, 0.9]
    exact = exact_resampled_differences(a, b)  # (5**5,)
    result = paired_bootstrap(a, b, samples=200_000, seed=1)
    assert result.diff == pytest.approx(np.mean(b) - np.mean(a), abs=1e-12)
    assert result.mean_a == pytest.approx(np.mean(a), abs=1e-12)
    # Monte Carlo with 200,000 draws: the standard error of a std estimate is ~std / 630
    assert result.stderr == pytest.approx(exact.std(), rel=0.01)
    assert result.low == pytest.approx(np.percentile(exact, 2.5), abs=0.01)
    assert result.high == pytest.approx(np.percentile(exact, 97.5), abs=0.01)
    assert result.b_better == pytest.approx((exact > 0).mean(), abs=0.005)
    exact_a = np.array([np.mean([a[i] for i in d]) for d in itertools.product(range(5), repeat=5)])
    assert result.stderr_a == pytest.approx(exact_a.std(), rel=0.01)


def test_standard_error_is_the_exact_bootstrap_one_with_n_minus_1():
    scores = [0.2, 0.9, 0.4, 0.1, 0.6]
    means = np.array(
        [np.mean([scores[i] for i in d]) for d in itertools.product(range(5), repeat=5)]
    )
    # the bootstrap divides by N, the sample standard deviation by N - 1
    assert standard_error(scores) == pytest.approx(means.std() * np.sqrt(5 / 4), rel=1e-9)
    assert standard_error([0.4]) is None


def test_standard_error_of_a_large_set_is_sigma_over_root_n():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 4_000)
    noise = rng.normal(0.0, 0.2, 4_000)
    result = paired_bootstrap(a, a + noise, samples=4_000)
    assert result.stderr == pytest.approx(noise.std() / np.sqrt(4_000), rel=0.05)
    assert result.stderr_a == pytest.approx(a.std() / np.sqrt(4_000), rel=0.05)


def test_identical_models_differ_by_nothing():
    scores = [0.3, 0.1, 0.8]
    result = paired_bootstrap(scores, scores, samples=100)
    assert (result.diff, result.stderr, result.low, result.high) == (0.0, 0.0, 0.0, 0.0)
    assert result.b_better == 0.0


@pytest.mark.parametrize(
    ("a", "b", "samples", "message"),
    [
        ([0.1, 0.2], [0.1], 10, "2 scores for model A and 1 for model B"),
        ([], [], 10, "no scores"),
        ([0.1], [0.2], 1, "samples must be at least 2"),
    ],
)
def test_bad_input_is_named(a, b, samples, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, samples=samples)


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_models.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b", "--features", "f", "--set", "coco:root"], "'coco:root' is not NAME:DATA_ROOT"),
        (["a", "b", "--features", "f", "--set", "f8k:root:val"], "with SPLIT train, dev or test"),
        (["no-such-model", "default", "--features", "f", "--set", "f8k:no-such-root:dev"], "no-"),
    ],
)
def test_compare_script_names_bad_input_in_one_line(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("compare_models.py: error:") and message in last
    assert "Traceback" not in done.stderr
