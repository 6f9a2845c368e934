"""Python as a plain `pip install rnncap` has it: an import hook that refuses some packages (as
if they were not installed), for subprocesses that must not see what the test process has.

    subprocess.run([sys.executable, "-c", blocker(["torch"]) + script])
    subprocess.run([sys.executable, "-m", "rnncap.cli", ...], env=blocked_env(["torch"], tmp))
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_HOOK = '''
import sys


class Blocked:
    """Behave as if these packages were not installed: {names}."""

    names = {names!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Blocked())
'''


def blocker(packages: Iterable[str]) -> str:
    """Python source that makes importing any of `packages` (or their submodules) fail with
    ModuleNotFoundError, as when they are not installed; run it before anything else."""
    return _HOOK.format(names=tuple(sorted(packages)))


def blocked_env(packages: Iterable[str], folder: Path) -> dict[str, str]:
    """An environment whose Python processes start with `packages` blocked: a sitecustomize.py
    written into `folder`, put first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(blocker(packages), encoding="utf-8")
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))
