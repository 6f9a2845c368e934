"""One error family: every exception class rnncap defines for its users is an RnncapError, and the
command line turns any of them into one line and exit code 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rnncap
from rnncap.utils.errors import DataError, ModelError, RnncapError

# Not errors for a library user to catch: the web service's HTTP answer and its signal that a
# client hung up, and a write failure that stays an OSError.
NOT_IN_THE_FAMILY = {"ApiError", "ClientGone", "WriteError"}


def _error_classes() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(rnncap.__path__, "rnncap."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_error_rnncap_defines_is_an_rnncap_error():
    classes = _error_classes()
    assert len(classes) >= 12  # the walk found the package's errors
    outside = [
        n
        for n, c in classes.items()
        if not issubclass(c, RnncapError) and n.rsplit(".", 1)[1] not in NOT_IN_THE_FAMILY
    ]
    assert outside == []


def test_the_family_keeps_the_builtin_types_and_is_exported():
    from rnncap.data.features import MissingFeaturesError
    from rnncap.data.images import ImageError
    from rnncap.models.encoders import WeightsUnavailableError

    assert issubclass(ImageError, DataError) and issubclass(ImageError, ValueError)
    assert issubclass(MissingFeaturesError, DataError)
    assert issubclass(MissingFeaturesError, KeyError)
    assert issubclass(WeightsUnavailableError, ModelError)
    assert issubclass(rnncap.CaptionError, rnncap.RnncapError)
    assert issubclass(rnncap.ConfigError, rnncap.RnncapError)


@pytest.mark.parametrize("error", ["ImageError", "MissingFeaturesError"])
def test_the_command_line_prints_any_of_them_as_one_line(error, monkeypatch, capsys):
    from rnncap import cli
    from rnncap.cli import lm
    from rnncap.data import features, images

    kind = getattr(images, error, None) or getattr(features, error)

    def failing(args):
        raise kind("photo.jpg: bad")

    monkeypatch.setattr(lm, "run", failing)
    assert cli.main(["lm", "--data", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "rnncap: error: photo.jpg: bad\n"
