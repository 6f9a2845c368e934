"""The `rnncap` command line: a thin dispatcher over one module per sub-command in this package.

Each command module (`rnncap.cli.caption`, `.train`, ...) defines NAME, HELP,
`add_arguments(parser)` and `run(args) -> int`; it imports heavy libraries (torch, matplotlib)
inside `run`, so `rnncap --help` stays fast. This package is the only place that knows argparse
and flag wording.
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
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rnncap.cli._common import fail
    from rnncap.utils.errors import RnncapError

    args = build_parser().parse_args(argv)
    try:
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
    except ModuleNotFoundError as error:  # a command that needs torch, in a torch-free install
        if (error.name or "").split(".")[0] not in ("torch", "torchvision"):
            raise
        return fail(f"rnncap {args.command}: needs PyTorch, which is not installed "
                    f"(pip install torch torchvision)")  # fmt: skip
    except KeyboardInterrupt:
        print("rnncap: interrupted", file=sys.stderr)
        return 130
