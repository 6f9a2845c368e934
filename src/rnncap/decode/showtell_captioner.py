"""A Show-and-Tell model folder (`rnncap convert-show-tell`) as a `Captioner`: its encoder runs
in torch, and the decoding options that need an rnncap vocabulary, classifier or language model
are refused."""

from __future__ import annotations

from rnncap.decode.options import DecodeOptions

# Options that need an rnncap vocabulary, classifier or language model beside the decoder.
_NOT_FOR_SHOW_TELL = ("guidance", "no_end_after", "lm_weight", "source_lm_weight")


def show_tell_captioner(folder, options: DecodeOptions, backend, device, name: str):
    """A `Captioner` of a Show-and-Tell folder; its encoder runs in torch ("onnx" is refused)."""
    from rnncap.decode.captioner import Captioner
    from rnncap.models.folder import CONFIG
    from rnncap.models.onnx_encoder import BackendError
    from rnncap.models.showtell_folder import load_show_tell_folder
    from rnncap.utils.io import InvalidFileError

    if backend == "onnx":
        raise BackendError("a Show-and-Tell model's encoder runs in torch only")
    for field in _NOT_FOR_SHOW_TELL:
        if getattr(options, field) != getattr(DecodeOptions(), field):
            raise InvalidFileError(
                folder / CONFIG, "not available to a Show-and-Tell model", f"decoding.{field}"
            )
    model = load_show_tell_folder(folder, device)
    return Captioner(model, model.vocab, options, backend=None, name=name, folder=folder)
