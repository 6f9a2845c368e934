"""Greedy and beam-search decoding, batched over images, one implementation each.

Both only use the model's `init_state(features)` and `step(tokens, state)`, so they serve every
cell type (rnn, lstm, attn) alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rnncap.models.captioner import MAX_LENGTH
from rnncap.utils.config import ConfigError, check_range, check_types, config_from_dict

MAX_BEAM = 100  # hypotheses per image at most: the search holds beam x images decoder states
MAX_FUSION_WEIGHT = 10.0  # a language model's weight in the fused score at most


@dataclass(frozen=True)
class DecodeOptions:
    """How a caption is searched for. A model folder may set these in config.json "decoding"."""

    beam_size: int = 3  # hypotheses kept per image; 1 = greedy
    max_length: int | None = None  # words per caption at most; None: the model's max_length
    length_penalty: float = 0.0  # rank finished beams by score / length**a; 0: the plain sum
    no_repeat_ngram: int = 0  # n > 0: no caption holds the same n words in a row twice
    guidance: float = 0.0  # classifier guidance: bonus weight for words of confident classes
    guidance_threshold: float = 0.3  # ImageNet class probability from which a class counts
    no_end_after: tuple[str, ...] = ()  # words a caption may not end on, e.g. "a", "the"
    lm_weight: float = 0.0  # shallow fusion: + this x log p of the model folder's lm/
    source_lm_weight: float = 0.0  # density ratio: - this x log p of its source_lm/

    def __post_init__(self) -> None:
        """Types and ranges; a ConfigError (a ValueError) names the bad field."""
        if isinstance(self.no_end_after, list):  # as read from JSON
            object.__setattr__(self, "no_end_after", tuple(self.no_end_after))
        check_types(self)
        if self.beam_size < 1:
            raise ConfigError("beam_size", f"must be >= 1, got {self.beam_size}")
        check_range("beam_size", self.beam_size, 1, MAX_BEAM)
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("max_length", f"must be >= 1, got {self.max_length}")
        if self.max_length is not None:
            check_range("max_length", self.max_length, 1, MAX_LENGTH)
        # Ranges in which the search's sums stay finite and every setting still means something:
        # a length**20 divisor, or a bonus of 1e3 log-probability units, only breaks ties.
        for name, high in (("length_penalty", 10.0), ("guidance", 100.0)):
            value = getattr(self, name)
            if not 0 <= value <= high:  # NaN fails too
                raise ConfigError(name, f"must be between 0 and {high:g}, got {value:g}")
        check_range("no_repeat_ngram", self.no_repeat_ngram, 0, MAX_LENGTH)
        if not 0 < self.guidance_threshold <= 1:
            raise ConfigError(
                "guidance_threshold", f"must be in (0, 1], got {self.guidance_threshold}"
            )
        for name in ("lm_weight", "source_lm_weight"):
            check_range(name, getattr(self, name), 0.0, MAX_FUSION_WEIGHT)
        if not isinstance(self.no_end_after, tuple) or not all(
            isinstance(w, str) for w in self.no_end_after
        ):
            raise ConfigError("no_end_after", f"must be a list of words, got {self.no_end_after!r}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["no_end_after"] = list(self.no_end_after)  # JSON has lists, not tuples
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DecodeOptions:
        return config_from_dict(cls, values, "decoding options")


@dataclass
class Decoded:
    tokens: list[list[int]]  # word ids per image, without <start>/<end>
    scores: list[float]  # sum of log-probabilities (length-normalised when length_penalty > 0)
    attention: list[torch.Tensor] | None  # per image (L, P): weights behind each emitted word


def _banned(model) -> list[int]:
    # Tokens a caption never contains: padding, <start> and <unk>.
    cfg = model.config
    return [cfg.pad_id, cfg.start_id, cfg.unk_id]


def _normalise(score: float, length: int, length_penalty: float) -> float:
    return score / max(length, 1) ** length_penalty if length_penalty > 0 else score


def _extend(scores, log_probs, rows, finished, banned: list[int], pad_id: int):
    """One search step: every image's K best continuations -> (scores, parent beam, word), (N, K).

    scores (N, K) so far, finished (N, K), log_probs (R, V) of the next word for the hypotheses
    `rows` (R,) of the N*K (None: all of them). Banned words are never emitted; a finished
    hypothesis continues only with padding, at no cost, and one not stepped has no continuation.
    An image's K best continuations are among the K best of each of its hypotheses, so each row
    offers its top K, (R, K), and each image picks from its K*K: the same choice as a top K over
    all K*V, without an (N*K, V) tensor of totals.
    """
    N, K = scores.shape
    log_probs[:, banned] = float("-inf")
    top, words = log_probs.topk(min(K, log_probs.shape[1]), dim=1)  # (R, k)
    k = top.shape[1]
    flat = scores.view(-1)
    taken = slice(None) if rows is None else rows
    cand = scores.new_full((N * K, K), float("-inf"))  # (N*K, K) each row's offers
    cand_words = words.new_full((N * K, K), pad_id)
    cand[taken, :k] = flat[taken, None] + top
    cand_words[taken, :k] = words
    done = finished.view(-1, 1)  # (N*K, 1)
    stay = torch.full_like(cand, float("-inf"))
    stay[:, 0] = flat  # a finished hypothesis: padding, its score unchanged
    cand = torch.where(done, stay, cand)
    cand_words = cand_words.masked_fill(done, pad_id)
    scores, pick = cand.view(N, K * K).topk(K, dim=1)  # (N, K)
    beam = torch.div(pick, K, rounding_mode="floor")  # (N, K) which parent
    return scores, beam, cand_words.view(N, K * K).gather(1, pick)


def _best_of_beams(history, scores, attn_history, cfg, length_penalty: float) -> Decoded:
    """Each image's best finished beam (by score / length**a with a length penalty a)."""
    N, K = scores.shape
    rows, values_so_far = history.tolist(), scores.tolist()  # one copy from the device each
    out_tokens, out_scores, best_rows = [], [], []
    for n in range(N):
        candidates = [words_before_end(rows[n * K + k], cfg) for k in range(K)]
        values = [
            _normalise(values_so_far[n][k], len(candidates[k]), length_penalty) for k in range(K)
        ]
        best = max(range(K), key=lambda k: (values[k], -k))  # the first of equal values
        out_tokens.append(candidates[best])
        out_scores.append(values[best])
        best_rows.append(n * K + best)
    if attn_history is None:
        return Decoded(out_tokens, out_scores, None)
    maps = attn_history[best_rows].cpu()  # (N, t, P)
    attn = [m[: len(t)].clone() for m, t in zip(maps, out_tokens, strict=True)]  # own storage
    return Decoded(out_tokens, out_scores, attn)


def words_before_end(sequence: list[int], cfg) -> list[int]:
    """Emitted ids up to (not including) the first <end> or padding."""
    for t, token in enumerate(sequence):
        if token in (cfg.end_id, cfg.pad_id):
            return sequence[:t]
    return sequence


def _block_repeats(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid, in place, every word that would complete an n-gram already in the hypothesis.

    log_probs (B, V); history (B, t) the words emitted so far. For n = 2: if "in a" was emitted,
    "a" cannot follow "in" again. All earlier positions are compared at once (no loop, no sync).
    """
    B, t = history.shape
    if t < n:
        return
    prefix = history[:, t - n + 1 :]  # (B, n-1): the words the next one would extend
    earlier = history[:, :-1].unfold(1, n - 1, 1) if n > 1 else history.new_empty(B, t, 0)
    match = (earlier == prefix[:, None, :]).all(2)  # (B, t-n+1): earlier (n-1)-gram == prefix
    followers = history[:, n - 1 :]  # (B, t-n+1): the word that came after each of them
    # -inf onto each follower of a match, +inf (no change under min) onto the others; a word
    # that follows several earlier positions is blocked if any of them matches. Touches the
    # (B, t) followers only, never a dense (B, V) mask.
    inf = torch.tensor(float("inf"), dtype=log_probs.dtype, device=log_probs.device)
    log_probs.scatter_reduce_(1, followers, torch.where(match, -inf, inf), reduce="amin")


def _settled(scores, finished, bonus) -> torch.Tensor:
    """(N,) bool: images whose best finished hypothesis already beats the most that any of
    their unfinished ones could still reach (scores (N, K), finished (N, K), bonus the word bonus
    not yet spent as (ids, values) from `_per_hypothesis`, or None).

    A log-probability is <= 0 and each word's bonus is paid once, so an unfinished hypothesis
    ends at most at its score plus its unspent bonus. Once that is below an image's best finished
    score (ranked by the plain sum, no length penalty), that caption is the search's answer
    whatever the other hypotheses do next: they can stop. Only the rows that could never be
    chosen are cut short, so the captions and scores are the ones the full search returns.
    """
    N, K = scores.shape
    reach = scores if bonus is None else scores + bonus[1].clamp(min=0).sum(1).view(N, K)
    best_done = scores.masked_fill(~finished, float("-inf")).max(1).values  # (N,)
    best_going = reach.masked_fill(finished, float("-inf")).max(1).values  # (N,)
    return best_done > best_going


def _ended(finished, parent, word, scores, bonus, cfg, early_stop: bool) -> torch.Tensor:
    """(N, K) bool after a step: a hypothesis has ended when its parent had, when it just said
    <end> (or padding), or, with `early_stop`, when its image's search is settled."""
    N, K = word.shape
    ended = finished.view(-1)[parent].view(N, K) | (word == cfg.end_id) | (word == cfg.pad_id)
    if early_stop:
        ended |= _settled(scores, ended, bonus)[:, None]
    return ended


def _check_arguments(beam_size: int, no_repeat_ngram: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if no_repeat_ngram < 0:
        raise ValueError(f"no_repeat_ngram must be >= 0, got {no_repeat_ngram}")


def _per_hypothesis(word_bonus, N: int, K: int, dtype, device):
    """The images' word bonus (N, V), sparse, for each of their K hypotheses: (ids, values),
    each (N*K, M), M the most words with a bonus in one image (padded with value 0, ids in
    increasing order); None when no word has one.

    A few words per image carry a bonus: kept dense, every step would copy, add and sum an
    (N*K, V) tensor for them.
    """
    if word_bonus is None:
        return None
    if word_bonus.shape[0] != N:
        raise ValueError(f"word_bonus has {word_bonus.shape[0]} rows for {N} images")
    word_bonus = word_bonus.to(device, dtype)
    nonzero = word_bonus != 0  # (N, V)
    M = int(nonzero.sum(1).max()) if N > 0 else 0
    if M == 0:
        return None
    ids = nonzero.to(dtype).topk(M, dim=1).indices.sort(1).values  # (N, M)
    values = word_bonus.gather(1, ids)  # (N, M)
    return ids.repeat_interleave(K, dim=0), values.repeat_interleave(K, dim=0)


def _spend(bonus, parent, word):
    """The unspent bonus after a step: each hypothesis's parent's, less the word just said."""
    ids, values = bonus  # ids are the image's: the same for a parent of the same image
    return ids, values[parent].masked_fill_(ids == word.view(-1, 1), 0.0)


def _constrain(log_probs, history, bonus, no_repeat_ngram: int, no_end_after, end_id: int):
    """Next-word log-probabilities (R, V) of hypotheses that said `history` (R, t): plus
    the word bonus not yet spent (a word's bonus is paid once, a per-image prior), with every
    word blocked that would repeat an n-gram (n = no_repeat_ngram > 0), and no <end> right after
    a word marked in `no_end_after` (V,) bool. Beam size may exceed the vocabulary: impossible
    beams score -inf."""
    if bonus is not None:
        log_probs.scatter_add_(1, *bonus)
    if no_repeat_ngram > 0:
        _block_repeats(log_probs, history, no_repeat_ngram)
    if no_end_after is not None and history.shape[1] > 0:
        rows = no_end_after.to(history.device)[history[:, -1]]  # (R,) the last word
        log_probs[rows, end_id] = float("-inf")
    return log_probs


def rows_per_image(model, state: tuple, K: int) -> tuple[tuple, set[int]]:
    """The decoder state `init_state` returned, one row per image -> K rows per image (image n's
    rows n*K .. n*K+K-1), and the positions of the static entries, kept one per image."""
    static = set(getattr(model, "static_state", ()))
    state = tuple(s if i in static else s.repeat_interleave(K, dim=0) for i, s in enumerate(state))
    return state, static


def _rows_to_step(finished, scores) -> torch.Tensor | None:
    """(R,) the hypotheses worth a decoder step, or None for all of them.

    A finished hypothesis is only ever extended by padding, whatever the model says, and an
    impossible one (score -inf: at the first step, all copies of an image's start but the first)
    is never chosen, so on a CPU (where the cost grows with the rows) only the others are
    stepped. On a GPU every row is (the whole batch costs the same; nonzero() would wait).
    """
    if scores.device.type != "cpu":
        return None
    return (~finished & (scores > float("-inf"))).view(-1).nonzero().squeeze(1)


def _step_rows(model, tokens, state, rows, static: set):
    """`model.step` on the hypotheses `rows` (None: all): (log_probs (R, V), state, weights
    (N*K, P) | None). The other rows keep their state, and their attention is zeros; the static
    entries (one per image) go as they are."""
    if rows is None or len(rows) == len(tokens):
        return model.step(tokens, state)
    sub_state = tuple(s if i in static else s[rows] for i, s in enumerate(state))
    log_probs, sub_state, weights = model.step(tokens[rows], sub_state)
    state = tuple(
        s if i in static else s.index_copy(0, rows, new)
        for i, (s, new) in enumerate(zip(state, sub_state, strict=True))
    )
    if weights is not None:
        weights = weights.new_zeros(len(tokens), weights.shape[1]).index_copy_(0, rows, weights)
    return log_probs, state, weights


def _of_rows(history, bonus, rows):
    """The history (R, t) and the unspent bonus (ids, values) of the hypotheses `rows`."""
    if rows is None:
        return history, bonus
    return history[rows], None if bonus is None else (bonus[0][rows], bonus[1][rows])


@torch.no_grad()
def greedy(
    model, features: torch.Tensor, max_length: int | None = None, no_repeat_ngram: int = 0
) -> Decoded:
    """The most probable word at every step, for a batch of images' features (N, ...)."""
    return beam_search(
        model, features, beam_size=1, max_length=max_length, no_repeat_ngram=no_repeat_ngram
    )


@torch.no_grad()
def beam_search(
    model,
    features: torch.Tensor,
    beam_size: int = 3,
    max_length: int | None = None,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
    word_bonus: torch.Tensor | None = None,
    no_end_after: torch.Tensor | None = None,
) -> Decoded:
    """Beam search over a batch of N images at once (N * beam_size hypotheses per step).

    A hypothesis ends with <end> (its log-probability counts) or after `max_length` words, then
    keeps its score. `length_penalty` a > 0 ranks the final beams by score / length**a; see
    `_constrain` for `no_repeat_ngram`, `word_bonus` (N, V) and `no_end_after` (V,) bool.
    """
    _check_arguments(beam_size, no_repeat_ngram)
    cfg = model.config
    max_length = cfg.max_length if max_length is None else max_length
    K = beam_size
    state = model.init_state(features)
    N, device = state[0].shape[0], state[0].device
    # Every image starts with K copies of its state; only the first copy is live.
    state, static = rows_per_image(model, state, K)  # (N*K, ...); static entries (N, ...)
    dtype = torch.float64 if state[0].dtype == torch.float64 else torch.float32  # scores accumulate
    scores = torch.full((N, K), float("-inf"), device=device, dtype=dtype)
    scores[:, 0] = 0.0
    tokens = torch.full((N * K,), cfg.start_id, dtype=torch.long, device=device)
    finished = torch.zeros(N, K, dtype=torch.bool, device=device)
    history = torch.zeros(N * K, 0, dtype=torch.long, device=device)  # emitted ids incl. <end>
    attn_history = None  # (N*K, t, P) for attention models
    banned = _banned(model)
    base = (torch.arange(N, device=device) * K)[:, None]  # (N, 1)
    bonus = _per_hypothesis(word_bonus, N, K, dtype, device)  # (ids, values) (N*K, M) | None
    # settled images stop early only while scores can only fall: no length penalty, and no
    # step that can score above 0 (a subtracted language model)
    early_stop = length_penalty == 0 and getattr(model, "steps_nonpositive", True)

    for _ in range(max_length):
        rows = _rows_to_step(finished, scores)  # (R,) | None: all
        log_probs, state, weights = _step_rows(model, tokens, state, rows, static)  # (R, V)
        log_probs = _constrain(log_probs.to(dtype), *_of_rows(history, bonus, rows),
                               no_repeat_ngram, no_end_after, cfg.end_id)  # fmt: skip
        scores, beam, word = _extend(scores, log_probs, rows, finished, banned, cfg.pad_id)
        parent = (base + beam).view(-1)  # (N*K,)
        # Static entries (the attention grid A) are one per image: reordering beams within an
        # image leaves them as they are.
        state = tuple(s if i in static else s[parent] for i, s in enumerate(state))
        history = torch.cat([history[parent], word.view(-1, 1)], 1)  # (N*K, t)
        if bonus is not None:  # a word's bonus is spent once the hypothesis has said it
            bonus = _spend(bonus, parent, word)
        if weights is not None:
            w = weights.to(dtype)[parent][:, None]  # (N*K, 1, P)
            attn_history = w if attn_history is None else torch.cat([attn_history[parent], w], 1)
        finished = _ended(finished, parent, word, scores, bonus, cfg, early_stop)
        tokens = word.view(-1)
        if bool(finished.all()):
            break
    return _best_of_beams(history, scores, attn_history, cfg, length_penalty)


def decode(
    model,
    features: torch.Tensor,
    options: DecodeOptions,
    word_bonus: torch.Tensor | None = None,
    no_end_after: torch.Tensor | None = None,
) -> Decoded:
    """Beam search (greedy when beam_size is 1) with every setting taken from `options`;
    `word_bonus` (N, V) is the classifier guidance's prior when `options.guidance` > 0 and
    `no_end_after` (V,) bool marks the ids of `options.no_end_after`."""
    return beam_search(
        model,
        features,
        beam_size=options.beam_size,
        max_length=options.max_length,
        length_penalty=options.length_penalty,
        no_repeat_ngram=options.no_repeat_ngram,
        word_bonus=word_bonus,
        no_end_after=no_end_after,
    )
