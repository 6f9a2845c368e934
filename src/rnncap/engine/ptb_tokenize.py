"""A Java-free copy of the caption tokenisation pycocoevalcap does before scoring.

pycocoevalcap runs Stanford CoreNLP 3.4.1's PTBTokenizer (-preserveLines -lowerCase) and then drops
a fixed list of punctuation tokens; `ptb_tokenize` reproduces that output for caption-like English.
"""

from __future__ import annotations

import re

# The tokens pycocoevalcap drops after tokenising (its PUNCTUATIONS list). With -lowerCase the
# bracket tokens come out as "-lrb-" etc., so the upper-case entries never match and stay.
PUNCTUATIONS = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# Abbreviations that keep their period (a subset of CoreNLP's lists: the ones seen in captions).
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|st|jr|sr|prof|gen|rep|sen|gov|capt|col|lt|sgt|rev|hon|mt|ft|ave|blvd|rd|no|"
    "vs|etc|inc|co|corp|ltd|dept|univ|jan|feb|mar|apr|aug|sep|sept|oct|nov|dec|"
    "mon|tue|tues|wed|thu|thurs|fri|sat|sun|approx|est|fig"
)

# One alternative per token class, tried in order at each position (like the lexer's rules).
_TOKEN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s"()<>\[\]{}]*[^\s"()<>\[\]{}.,;:!?'])
  | (?P<email>[\w.+-]+@[^\W_]+(?:[.-][^\W_]+)*\.[^\W\d_]+)
  | (?P<sgml></?[A-Za-z!][^>\n]*>)
  | (?P<entity>&amp;)
  | (?P<fraction>\d+\ \d+/\d+(?![^\W_]))
  | (?P<smiley>[:;=]-?[()](?=\s|$))
  | (?P<company>[A-Z]+&[A-Z]+\b)
  | (?P<acronym>(?:[^\W\d_]\.){2,}(?![^\W_]))
  | (?P<abbrev>(?i:(?:"""
    + _ABBREVIATIONS
    + r""")|[^\W\d_])\.(?![^\W_]))
  | (?P<time>\d{1,2}:\d\d(?!\d))
  | (?P<number>(?>[+-]?\d[\d,]*(?:\.\d+)*(?:[-/]\d[\d,.]*)*)(?![^\W_]|-[^\W_]))
  | (?P<hashtag>\#[^\W\d_]\w*)
  | (?P<word>[\w'@]+(?:[-./][\w'@]+)*)
  | (?P<dots>\.+)
  | (?P<dashes>-{2,})
  | (?P<bang>[!?]+)
  | (?P<other>\S)
    """,
    re.VERBOSE,
)

_CLITICS = r"(?:n't|'s|'re|'ve|'ll|'d|'m)"
_CLITIC = re.compile(rf"(?i){_CLITICS}")
_CLITIC_HYPHEN = re.compile(rf"(?i)({_CLITICS})-(.+)")  # 's-eye-view -> 's eye-view
_CONTRACTION = re.compile(rf"(?i)(.*?[^\W_].*?)({_CLITICS})")  # dog's -> dog 's
_IRREGULAR_NEGATION = ("ca", "wo", "sha", "ai")  # can't -> ca n't, won't -> wo n't
_SPLIT_WORDS = {
    "cannot": ("can", "not"),
    "gonna": ("gon", "na"),
    "gotta": ("got", "ta"),
    "wanna": ("wan", "na"),
    "lemme": ("lem", "me"),
    "gimme": ("gim", "me"),
    "'tis": ("'t", "is"),
    "'twas": ("'t", "was"),
}
_LEADING_APOSTROPHE_WORD = re.compile(r"(?i)'(n'?|\d0s|em|cause|til)")  # '90s, rock 'n' roll


def _split_word(word: str) -> list[str]:
    """PTB's treatment of a run of word characters and apostrophes: contractions, quotes, 's."""
    if not word:
        return []
    lower = word.lower()
    if lower in _SPLIT_WORDS:
        split = _SPLIT_WORDS[lower]
        return [word[: len(split[0])], word[len(split[0]) :]]
    if "'" not in word or _CLITIC.fullmatch(word) or _LEADING_APOSTROPHE_WORD.fullmatch(word):
        return [word]
    if lower.startswith("y'") and len(word) > 2:  # y'all -> y' all
        return [word[:2], *_split_word(word[2:])]
    if match := _CLITIC_HYPHEN.fullmatch(word):
        return [match.group(1), match.group(2)]
    if "'n'" in lower and len(word) > 3:  # rock'n'roll -> rock 'n' roll
        at = lower.index("'n'")
        return [part for part in (word[:at], word[at : at + 3], word[at + 3 :]) if part]
    if word.startswith("'"):  # an opening single quote
        return ["`", *_split_word(word[1:])]
    if word.endswith("'"):  # a closing single quote, or the plural possessive (dogs')
        return [*_split_word(word[:-1]), "'"]
    if match := _CONTRACTION.fullmatch(word):
        head, clitic = match.groups()
        if clitic.lower() == "n't" and head.lower() in _IRREGULAR_NEGATION:
            return [head, clitic]
        return [*_split_word(head), clitic]
    return [word]


# Typographic characters the lexer reads as their ASCII counterparts.
_ASCII_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "--",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a0": " ",
    }
)


def _lexer_tokens(text: str) -> list[str]:
    """The tokens CoreNLP's PTBTokenizer emits for one line, before lower-casing."""
    text = text.translate(_ASCII_PUNCTUATION)
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind == "word":
            tokens.extend(_split_word(token))
        elif kind == "smiley":
            tokens.append(token[:-1] + _BRACKETS[token[-1]])
        elif kind == "dots":
            tokens.append("..." if len(token) >= 3 else ".")
        elif kind in ("sgml", "fraction"):
            tokens.append(token.replace(" ", "\u00a0"))
        elif kind == "entity":
            tokens.append("&")
        elif kind == "dashes":
            tokens.append("--")
        elif kind == "other":
            tokens.append(_BRACKETS.get(token, "``" if token == '"' else token))
        else:
            tokens.append(token)
    return tokens


def ptb_tokenize(caption: str) -> list[str]:
    """Lower-cased PTB tokens of one caption with pycocoevalcap's punctuation removed.

    `' '.join(ptb_tokenize(c))` is what pycocoevalcap's PTBTokenizer returns for caption `c`.
    """
    return [t for t in (tok.lower() for tok in _lexer_tokens(caption)) if t not in PUNCTUATIONS]
