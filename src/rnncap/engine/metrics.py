"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) computed by pycocoevalcap.

Captions go through pycocoevalcap's own PTB tokenizer (Java), as in the published numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence

from rnncap.utils.config import ConfigError
from rnncap.utils.errors import RnncapError

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE_L", "CIDEr")
_GROUPS = {"BLEU": METRICS[:4], "METEOR": ("METEOR",), "ROUGE_L": ("ROUGE_L",), "CIDEr": ("CIDEr",)}


class MetricsError(RnncapError, RuntimeError):
    """The scorers cannot run (no Java) or the inputs do not match."""


def check_java() -> None:
    """Raise MetricsError now, before any work, when the scorers' Java runtime is missing."""
    if shutil.which("java") is None:
        raise MetricsError(
            "java not found on PATH: pycocoevalcap's PTB tokenizer and METEOR need a Java runtime "
            "(e.g. apt-get install openjdk-17-jre-headless)"
        )


def _tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """PTB-tokenise (lower case, punctuation removed); empty captions stay empty strings."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer works line by line: keep newlines out, and never hand it an empty line,
    # which it would drop and so shift every later caption.
    placeholder = "xxemptyxx"
    wrapped = {
        k: [{"caption": " ".join(c.split()) or placeholder} for c in caps]
        for k, caps in captions.items()
    }
    tokenized = PTBTokenizer().tokenize(wrapped)
    return {k: [("" if t == placeholder else t) for t in tokenized[k]] for k in captions}


def _meteor(gts: dict, res: dict) -> float:
    """METEOR through its Java server, which is always shut down afterwards."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    except (ValueError, BrokenPipeError) as error:  # the Java side died: show why
        process = meteor.meteor_p
        process.kill()
        detail = process.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        raise MetricsError(f"METEOR (java) failed: {error}; {' '.join(detail)}") from None
    finally:
        process = meteor.meteor_p
        if process.stdin and not process.stdin.closed:
            process.stdin.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    return float(score)


def score(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] = ("BLEU", "METEOR", "ROUGE_L", "CIDEr"),
) -> dict[str, float]:
    """Corpus-level caption scores of `predictions` against `references`, by image id.

    Returns `{"BLEU-1": .., "BLEU-2": .., "BLEU-3": .., "BLEU-4": .., "METEOR": ..,
    "ROUGE_L": .., "CIDEr": ..}` (values in 0..1, CIDEr in 0..10) for the metric groups asked for
    in `metrics` (any of BLEU, METEOR, ROUGE_L, CIDEr; CIDEr alone is the cheap one to use during
    training). BLEU uses the "closest" reference length, as in the COCO evaluation server.
    SPICE is left out: it needs Stanford CoreNLP models downloaded at first use.
    Raises MetricsError when Java is missing or the two dicts do not hold the same ids.
    """
    unknown = [m for m in metrics if m not in _GROUPS]
    if unknown:
        raise ConfigError("metrics", f"unknown metrics {unknown}; valid: {', '.join(_GROUPS)}")
    if set(references) != set(predictions):
        missing = len(set(references) - set(predictions))
        extra = len(set(predictions) - set(references))
        raise MetricsError(
            f"ids differ: {missing} images lack a prediction, {extra} have no references"
        )
    if not references:
        raise MetricsError("nothing to score: no images")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise MetricsError(f"{len(empty)} images have no reference captions (e.g. {empty[0]!r})")
    check_java()

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    both = {("ref", k): refs for k, refs in references.items()}  # one Java start, not two
    both.update({("hyp", k): [predictions[k]] for k in references})
    tokenized = _tokenize(both)
    gts = {k: tokenized["ref", k] for k in references}
    res = {k: tokenized["hyp", k] for k in references}
    results: dict[str, float] = {}
    if "BLEU" in metrics:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        results.update({name: float(v) for name, v in zip(METRICS[:4], bleu, strict=True)})
    if "METEOR" in metrics:
        results["METEOR"] = _meteor(gts, res)
    if "ROUGE_L" in metrics:
        results["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in metrics:
        results["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return results
