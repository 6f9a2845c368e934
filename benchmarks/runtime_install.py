"""What `pip install rnncap` (the runtime: ONNX Runtime and NumPy, no torch) costs against the full
install: site-packages size, and `rnncap caption examples/cat.jpg` in a new process (wall time,
median of --repeats, and peak resident memory) on the runtime vs the torch backend, same run.

The runtime venv is made here (the wheel of this tree, its dependencies from the package index)
unless --runtime-venv names one; the full install is the environment running this script (or
--full-venv). The processes alternate, after one untimed run each (files in the page cache).
--model must carry its encoder.onnx (`rnncap export default OUT` makes one from the default).

Usage: python benchmarks/runtime_install.py [--model default] [--repeats 5]
           [--runtime-venv DIR] [--full-venv DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples" / "cat.jpg"
TARGETS = {"site-packages": 250e6, "wall": 1.0, "rss": 350e6}  # the runtime install's budget
# this environment without what points Python at a source tree (the runtime venv runs its own)
PLAIN = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
LEFT_OUT = (".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", "runs", "cache")


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python*/site-packages")
    return found


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def make_runtime_venv(folder: Path, extras: str = "") -> Path:
    """A fresh venv in `folder` holding this tree's wheel and its runtime dependencies, and those
    of `extras` when given (e.g. "serve": `pip install rnncap[serve]`)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "source"  # a clean copy: nothing stale from an earlier build/ gets in
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LEFT_OUT))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", source, "--no-deps", "-w", folder], check=True, env=PLAIN)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=PLAIN)
    (wheel,) = folder.glob("rnncap-*.whl")
    requirement = f"{wheel}[{extras}]" if extras else wheel
    install = [venv / "bin" / "python", "-m", "pip", "install", "-q", requirement]
    subprocess.run(install, check=True, env=PLAIN)
    return venv


def cold_run(command: list, env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one process running `command`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            sys.exit(f"{command[0]} failed:\n{err.read().decode(errors='replace')}")
        return wall, usage.ru_maxrss * 1024, out.read().decode().strip()  # ru_maxrss: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model folder with encoder.onnx")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (default: 5)")
    parser.add_argument("--runtime-venv", type=Path, help="an existing runtime-only venv")
    parser.add_argument("--full-venv", type=Path, help="the full install (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rnncap-runtime-") as tmp:
        runtime = args.runtime_venv or make_runtime_venv(Path(tmp))
        python = args.full_venv / "bin" / "python" if args.full_venv else Path(sys.executable)
        full_site = site_packages(args.full_venv) if args.full_venv else None
        full_site = full_site or Path(sysconfig.get_paths()["purelib"])
        caption = ["caption", "--model", args.model, "--quiet", IMAGE]
        paths = {
            "runtime": ([runtime / "bin" / "rnncap", *caption], PLAIN),
            "torch": (
                [python, "-m", "rnncap.cli", *caption, "--backend", "torch"],
                dict(PLAIN, PYTHONPATH=str(REPO / "src")),
            ),
        }
        runs = {name: [] for name in paths}
        for round_ in range(args.repeats + 1):  # round 0 is untimed
            for name, (command, env) in paths.items():
                result = cold_run([str(c) for c in command], env)
                if round_:
                    runs[name].append(result)
        sizes = {"runtime": folder_bytes(site_packages(runtime)), "torch": folder_bytes(full_site)}
    report(runs, sizes, full_site, args.repeats)


def report(runs: dict, sizes: dict, full_site: Path, repeats: int) -> None:
    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    rss = {name: max(r[1] for r in rs) for name, rs in runs.items()}
    labels = {"runtime": "runtime (pip install rnncap)", "torch": "full install, --backend torch"}
    print(f"rnncap caption {IMAGE.relative_to(REPO)} in a new process; full install: {full_site}")
    head = f"wall (median of {repeats})"
    print(f"{'install':<30} {'site-packages':>13} {head:>20} {'peak RSS':>9}")
    print("-" * 75)
    for name, label in labels.items():
        size, seconds, memory = sizes[name] / 1e6, wall[name], rss[name] / 1e6
        print(f"{label:<30} {size:>10.0f} MB {seconds:>18.2f} s {memory:>6.0f} MB")
    size, seconds, memory = (x["torch"] / x["runtime"] for x in (sizes, wall, rss))
    print(f"{'ratio full / runtime':<30} {size:>12.1f}x {seconds:>19.1f}x {memory:>8.1f}x")
    for name, results in runs.items():
        print(f"{name} caption: {results[0][2].rsplit(chr(9), 1)[-1]}")  # path<TAB>caption
    budget = {"site-packages": sizes["runtime"], "wall": wall["runtime"], "rss": rss["runtime"]}
    over = [name for name, value in budget.items() if value > TARGETS[name]]
    print(
        f"runtime targets (site-packages <= 250 MB, wall <= 1.0 s, RSS <= 350 MB): "
        f"{'met' if not over else 'over on ' + ', '.join(over)}"
    )


if __name__ == "__main__":
    main()
