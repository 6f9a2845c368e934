"""Atomic writes (a file or folder is written under a temporary name, then renamed into place),
`InvalidFileError`, the one error for a file that exists but cannot be used, and reading small
text and JSON files safely (regular files only, a size cap, no nesting that exhausts the stack).

Readers (and a crash mid-write) never see half a file: they see the old one or the new one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from rnncap.utils.errors import RnncapError


class InvalidFileError(RnncapError, ValueError):
    """A model, checkpoint, config, vocabulary, cache or data file that cannot be used.

    The message is one line: the file, the field when there is one (a config key), and what is
    wrong with it. Front ends print it as it is.
    """

    def __init__(self, path: str | Path, reason: str, field: str | None = None):
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = Path(path)
        self.field = field
        self.reason = reason


# A full disk, a quota, a file-size limit, a read-only file system: the place cannot take it.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WriteError(OSError):
    """An output that could not be written for want of room (see WRITE_ERRNOS); the message is
    one line naming the output: `PATH: cannot write (No space left on device)`."""

    def __init__(self, path: str | Path, error: OSError):
        reason = os.strerror(error.errno) if error.errno else first_line(error)
        super().__init__(error.errno, f"{path}: cannot write ({reason})")
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


MAX_CONFIG_BYTES = 1 << 20  # config.json files, a training --config
MAX_VOCAB_BYTES = 64 << 20  # vocab.json
MAX_DATA_BYTES = 2 << 30  # captions files and data set annotations


def check_regular_file(path: str | Path, max_bytes: int) -> int:
    """The size of a regular file (a link is followed) of at most `max_bytes`; InvalidFileError
    for a device (/dev/zero), FIFO, socket or folder, which would never end or never answer,
    and for a larger file. FileNotFoundError when there is nothing at `path`."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidFileError(path, "not a regular file (a device, FIFO, socket or folder)")
    if info.st_size > max_bytes:
        raise InvalidFileError(path, f"{info.st_size} bytes, more than the {max_bytes} accepted")
    return info.st_size


def read_text_file(path: str | Path, max_bytes: int, kind: str = "text") -> str:
    """A UTF-8 regular file of at most `max_bytes` (`check_regular_file`), or InvalidFileError
    (`not a readable KIND file (...)` when it cannot be read or decoded)."""
    check_regular_file(path, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew since
            raise InvalidFileError(path, f"more than the {max_bytes} bytes accepted")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidFileError(path, f"not a readable {kind} file ({first_line(error)})") from None


def read_json_file(path: str | Path, max_bytes: int = MAX_CONFIG_BYTES):
    """The JSON value of a regular file of at most `max_bytes`, or InvalidFileError (one line
    naming the file) for a non-regular, oversized, unreadable or malformed file, nesting too deep
    for the parser, or an integer of more digits than Python converts."""
    text = read_text_file(path, max_bytes, "JSON")
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidFileError(path, "not a readable JSON file (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError; an integer over sys.get_int_max_str_digits
        raise InvalidFileError(path, f"not a readable JSON file ({first_line(error)})") from None


def atomic_write(path: str | Path, write: Callable[[Path], object], folder: bool = False) -> Path:
    """Call `write(temporary path)`, then rename the temporary over `path`.

    The temporary sits beside `path` (same file system, so `os.replace` is atomic). With
    `folder=True` the temporary is an empty folder for `write` to fill, and an existing folder
    at `path` is swapped out (as .NAME.old) and removed; a link to a folder keeps pointing to
    the new one. A kill between the two renames leaves .NAME.old and the complete temporary
    (`rnncap.engine.resume.recover_checkpoint` puts the newest back).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            return _atomic_folder(path, write)
        _remove_orphans(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # some writers create private (0600) files
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    except OSError as error:
        if error.errno in WRITE_ERRNOS:  # named after the outermost output, not a temporary
            raise WriteError(path, error) from None
        raise


def _remove_orphans(path: Path) -> None:
    """Remove the temporaries of `path` (.NAME.PID.tmp) whose process is gone (killed)."""
    prefix = f".{path.name}."
    for name in os.listdir(path.parent):
        pid = name[len(prefix) : -len(".tmp")]
        if name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit():
            if int(pid) != os.getpid() and not _alive(int(pid)):
                (path.parent / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _atomic_folder(path: Path, write: Callable[[Path], object]) -> Path:
    """atomic_write(..., folder=True)."""
    if path.is_symlink():  # replace the folder it points to; the link stays
        path = path.resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        _make_readable(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():  # left by a swap killed before its clean-up: the new copy is complete
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder: give it the permissions of an ordinary one."""
    umask = _umask()
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _umask() -> int:
    umask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(umask)
    return umask
