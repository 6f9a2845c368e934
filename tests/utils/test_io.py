"""Atomic writes: temporaries of killed processes are removed, a link to a folder is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from rnncap.utils.io import atomic_write, atomic_write_text


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    orphan = tmp_path / f".curves.png.{_dead_pid()}.tmp"  # left by a kill mid-write
    orphan.write_bytes(b"")
    running = tmp_path / f".curves.png.{os.getppid()}.tmp"  # a writer still at work
    running.write_bytes(b"")
    other = tmp_path / f".metrics.jsonl.{_dead_pid()}.tmp"  # another file's: not ours to judge
    other.write_bytes(b"")
    atomic_write_text(tmp_path / "curves.png", "png")
    assert (tmp_path / "curves.png").read_text() == "png"
    assert not orphan.exists() and running.exists() and other.exists()


def test_a_link_to_a_folder_stays_a_link(tmp_path):
    target = tmp_path / "models" / "v1"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    link = tmp_path / "current"
    link.symlink_to(target, target_is_directory=True)
    atomic_write(link, lambda tmp: (tmp / "new.txt").write_text("new"), folder=True)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "models"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["v1"]
