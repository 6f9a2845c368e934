"""The finite-difference helpers, the `rnncap gradcheck` command, and numpy_ref never importing
torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rnncap import cli
from rnncap.numpy_ref import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from rnncap.numpy_ref.checks import GradCheck


def test_rel_error():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0, 0.0]), np.array([3.0, 0.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros(3), np.full(3, 1e-12)) == pytest.approx(1e-4)  # floor of 1e-8
    with pytest.raises(ValueError, match=r"b: expected shape \(2,\)"):
        rel_error(np.zeros(2), np.zeros(3))


@pytest.mark.parametrize("points,h,tolerance", [(2, 1e-5, 1e-8), (4, 1e-3, 1e-10)])
def test_numerical_gradients_of_known_functions(points, h, tolerance):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x_before = x.copy()
    grad = eval_numerical_gradient(lambda z: np.sum(np.sin(z) * z), x, h=h, points=points)
    assert rel_error(grad, np.cos(x) * x + np.sin(x)) < tolerance
    df = rng.standard_normal((4, 3))
    grad = eval_numerical_gradient_array(lambda z: z.T**3, x, df, h=h, points=points)
    assert rel_error(grad, 3 * x**2 * df.T) < tolerance
    np.testing.assert_array_equal(x, x_before)  # perturbations are undone
    with pytest.raises(ValueError, match="points"):
        eval_numerical_gradient(np.sum, x, points=3)


def test_numpy_ref_never_imports_torch():
    code = (
        "import sys, rnncap.numpy_ref, rnncap.numpy_ref.checks, rnncap.cli.gradcheck\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gradcheck_command_passes_and_prints_json(capsys):
    assert cli.main(["gradcheck", "--seed", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(row["passed"] and row["max_rel_error"] < row["tolerance"] for row in rows)
    functions = {row["function"] for row in rows}
    for name in [
        "rnn_step",
        "rnn",
        "lstm_step",
        "lstm",
        "attention",
        "attention_lstm_step",
        "attention_lstm",
        "word_embedding",
        "temporal_affine",
        "temporal_softmax_loss",
        "NumpyCaptioner[rnn].loss",
        "NumpyCaptioner[lstm].loss",
        "NumpyCaptioner[attn].loss",
    ]:
        assert name in functions
    assert {"dx", "dh0", "dWx", "dWh", "db"} <= {
        r["parameter"] for r in rows if r["function"] == "lstm"
    }


def test_gradcheck_command_fails_on_a_large_error(monkeypatch, capsys):
    import rnncap.numpy_ref.checks as checks

    fake = [GradCheck("rnn", "dx", 1e-9, 1e-7), GradCheck("lstm", "dWh", 3e-5, 1e-7)]
    monkeypatch.setattr(checks, "run_gradchecks", lambda seed: fake)
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "function" in out and "max rel error" in out
    assert "3.00e-05" in out and "FAIL" in out and "1/2 gradients pass" in out
