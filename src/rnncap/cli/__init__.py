"""The `rnncap` command line: a thin dispatcher over one module per sub-command in this package.

Each command module (`rnncap.cli.caption`, `.train`, ...) defines NAME, HELP,
`add_arguments(parser)` and `run(args) -> int`, and EXTRA when it needs an optional install
("train", "serve"); it imports heavy libraries (torch, matplotlib) inside `run`, so `rnncap --help`
stays fast and runs on a plain `pip install rnncap`. This package is the only place that knows
argparse and flag wording.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from rnncap import __version__


def _command_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):  # _common, __main__
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnncap",
        description="Image captioning with recurrent networks (RNN, LSTM, attention LSTM).",
    )
    parser.add_argument("--version", action="version", version=f"rnncap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _extra=getattr(module, "EXTRA", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    from rnncap.cli._common import fail
    from rnncap.cli._extras import command_line, missing_extra, require
    from rnncap.utils.errors import RnncapError

    args = build_parser().parse_args(argv)
    try:
        require(args._extra)
        return int(args._run(args) or 0)
    except RnncapError as error:  # a bad model, data file, option, input or flag: one line, exit 2
        return fail(str(error))
    except OSError as error:  # a full disk, a quota, a read-only file system: one line
        from rnncap.utils.io import WRITE_ERRNOS, WriteError

        if isinstance(error, WriteError):
            return fail(str(error))
        if error.errno not in WRITE_ERRNOS:
            raise
        return fail(f"{error.filename or 'output'}: cannot write ({os.strerror(error.errno)})")
    except ModuleNotFoundError as error:  # a command that needs an extra the install lacks
        message = missing_extra(error, command_line(args))
        if message is None:
            raise
        return fail(message)
    except KeyboardInterrupt:
        print("rnncap: interrupted", file=sys.stderr)
        return 130
