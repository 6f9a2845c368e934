"""The command-line dispatcher: every command module is well formed and shows help."""

import subprocess
import sys

from rnncap import cli


def test_every_command_has_help_and_run():
    modules = list(cli._command_modules())
    assert modules, "no commands discovered"
    for module in modules:
        assert isinstance(module.NAME, str) and module.HELP
        assert callable(module.add_arguments) and callable(module.run)


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "rnncap.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for module in cli._command_modules():
        assert module.NAME in out
