"""One module per `rnncap` sub-command; `rnncap.cli` discovers them.

Each defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int` (the exit code).
"""
