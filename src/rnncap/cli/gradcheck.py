"""`rnncap gradcheck`: every NumPy backward against centred differences, printed as a table.

Exits 0 only when every relative error is below its tolerance (1e-7, or 1e-6 for a loss).
"""

from __future__ import annotations

import argparse
import json

NAME = "gradcheck"
HELP = "check every NumPy reference backward against numerical gradients (float64)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random inputs and weights (default: 0)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as a JSON list instead of a table"
    )


def run(args: argparse.Namespace) -> int:
    from rnncap.numpy_ref.checks import run_gradchecks

    results = run_gradchecks(args.seed)
    failed = [r for r in results if not r.passed]
    if args.json:
        rows = [
            {
                "function": r.function,
                "parameter": r.parameter,
                "max_rel_error": r.error,
                "tolerance": r.tolerance,
                "passed": r.passed,
            }
            for r in results
        ]
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r.function) for r in results)
        print(f"{'function':<{width}}  {'parameter':<10}  {'max rel error':>13}  {'tolerance':>9}")
        print(f"{'-' * width}  {'-' * 10}  {'-' * 13}  {'-' * 9}")
        for r in results:
            mark = "" if r.passed else "  FAIL"
            print(
                f"{r.function:<{width}}  {r.parameter:<10}  {r.error:>13.2e}  "
                f"{r.tolerance:>9.0e}{mark}"
            )
        worst = max(results, key=lambda r: r.error / r.tolerance)
        print(
            f"\n{len(results) - len(failed)}/{len(results)} gradients pass (seed {args.seed}); "
            f"worst: {worst.function} {worst.parameter} {worst.error:.2e}"
        )
    return 1 if failed else 0
