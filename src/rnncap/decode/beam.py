"""Greedy and beam-search decoding, batched over images, one implementation for every backend.

Both only use the decoder's `init_state(features)` and `step(tokens, state)`, so they serve every
cell type (rnn, lstm, attn) alike, in torch (`CaptioningRNN`, on any device) or in NumPy
(`rnncap.models.numpy_decoder`): the arrays are handled through the array API
(`rnncap.decode.arrays`), and every rule of the search is in `rnncap.decode.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnncap.decode import constrained, rules
from rnncap.decode.arrays import backend, device
from rnncap.decode.options import MAX_BEAM, MAX_FUSION_WEIGHT, DecodeOptions  # noqa: F401
from rnncap.decode.rules import words_before_end  # noqa: F401 - part of this module's API
from rnncap.models.captioner_config import MAX_LENGTH  # noqa: F401 - the command line's bound

INF = float("inf")


@dataclass
class Decoded:
    tokens: list[list[int]]  # word ids per image, without <start>/<end>
    scores: list[float]  # sum of log-probabilities (length-normalised when length_penalty > 0)
    attention: list | None  # per image (L, P) array: weights behind each emitted word (attn)


def _extend(xp, ops, scores, log_probs, rows, finished, banned: list[int], pad_id: int, need):
    """One search step: every group's K best continuations -> (scores, parent row, word), each
    (N, K), N the groups (an image, or an image's state with required words: `constrained`).

    scores (N, K) so far, finished (N, K), log_probs (R, V) of the next word for the hypotheses
    `rows` (R,) of the N*K (None: all of them). Banned words are never emitted; a finished
    hypothesis continues only with padding, at no cost, and one not stepped has no continuation.
    A group's K best continuations are among the K best of each of its hypotheses, so each row
    offers its top K, (R, K), and each group picks from its K*K: the same choice as a top K over
    all K*V, without an (N*K, V) array of totals. With required words (`need`), a state-0 row
    also offers each of its required words to its image's state-1 group.
    """
    N, K = scores.shape
    log_probs[:, banned] = -INF
    said = None if need is None else constrained.split_offers(xp, ops, log_probs, need, rows)
    top, words = ops.topk(log_probs, min(K, log_probs.shape[1]))  # (R, k)
    k = top.shape[1]
    flat = xp.reshape(scores, (-1,))
    at = device(scores)
    cand = xp.full((N * K, K), -INF, dtype=scores.dtype, device=at)  # (N*K, K) each row's offers
    cand_words = xp.full((N * K, K), pad_id, dtype=words.dtype, device=at)
    if rows is None:
        cand[:, :k] = flat[:, None] + top
        cand_words[:, :k] = words
    else:
        cand[rows, :k] = xp.take(flat, rows)[:, None] + top
        cand_words[rows, :k] = words
    done = xp.reshape(finished, (-1, 1))  # (N*K, 1)
    stay = xp.full_like(cand, -INF)
    stay[:, 0] = flat  # a finished hypothesis: padding, its score unchanged
    cand = xp.where(done, stay, cand)
    cand_words = xp.where(done, pad_id, cand_words)
    if need is not None:
        cross = xp.full((N * K, said.shape[1]), -INF, dtype=scores.dtype, device=at)  # (N*K, M)
        if rows is None:
            cross = flat[:, None] + said
        else:
            cross[rows, :] = xp.take(flat, rows)[:, None] + said
        cross = xp.where(done, -INF, cross)
        return constrained.select(xp, ops, cand, cand_words, cross, need, K, pad_id)
    scores, pick = ops.topk(xp.reshape(cand, (N, K * K)), K)  # (N, K)
    base = xp.reshape(xp.arange(N, dtype=xp.int64, device=at) * K, (N, 1))  # (N, 1)
    parent = base + pick // K  # (N, K) the row each continuation extends
    return scores, parent, xp.take_along_axis(xp.reshape(cand_words, (N, K * K)), pick, axis=1)


def _best_of_beams(xp, ops, history, scores, attn_history, cfg, length_penalty) -> Decoded:
    """Each image's best finished beam (by score / length**a with a length penalty a)."""
    N, K = scores.shape
    rows, values_so_far = history.tolist(), scores.tolist()  # one copy from the device each
    out_tokens, out_scores, best_rows = [], [], []
    for n in range(N):
        candidates = [words_before_end(rows[n * K + k], cfg) for k in range(K)]
        values = [
            rules.normalise(values_so_far[n][k], len(candidates[k]), length_penalty)
            for k in range(K)
        ]
        best = max(range(K), key=lambda k: (values[k], -k))  # the first of equal values
        out_tokens.append(candidates[best])
        out_scores.append(values[best])
        best_rows.append(n * K + best)
    if attn_history is None:
        return Decoded(out_tokens, out_scores, None)
    picked = xp.take(attn_history, xp.asarray(best_rows, device=device(attn_history)), axis=0)
    maps = ops.to_host(picked)  # (N, t, P)
    attn = [xp.asarray(m[: len(t)], copy=True) for m, t in zip(maps, out_tokens, strict=True)]
    return Decoded(out_tokens, out_scores, attn)


def _check_arguments(beam_size: int, no_repeat_ngram: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if no_repeat_ngram < 0:
        raise ValueError(f"no_repeat_ngram must be >= 0, got {no_repeat_ngram}")


def rows_per_image(model, state: tuple, K: int) -> tuple[tuple, set[int]]:
    """The decoder state `init_state` returned, one row per image -> K rows per image (image n's
    rows n*K .. n*K+K-1), and the positions of the static entries, kept one per image."""
    xp, _ = backend(state[0])
    static = set(getattr(model, "static_state", ()))
    state = tuple(s if i in static else xp.repeat(s, K, axis=0) for i, s in enumerate(state))
    return state, static


def _rows_to_step(finished, scores):
    """(R,) the hypotheses worth a decoder step, or None for all of them.

    A finished hypothesis is only ever extended by padding, whatever the model says, and an
    impossible one (score -inf: at the first step, all copies of an image's start but the first)
    is never chosen, so on a CPU (where the cost grows with the rows) only the others are
    stepped. On a GPU every row is (the whole batch costs the same; nonzero() would wait).
    """
    xp, ops = backend(scores)
    if ops.steps_every_row(scores):
        return None
    return xp.nonzero(xp.reshape(~finished & (scores > -INF), (-1,)))[0]


def _step_rows(xp, ops, model, tokens, state, rows, static: set):
    """`model.step` on the hypotheses `rows` (None: all): (log_probs (R, V), state, weights
    (N*K, P) | None). The other rows keep their state, and their attention is zeros; the static
    entries (one per image) go as they are."""
    if rows is None or len(rows) == len(tokens):
        return model.step(tokens, state)
    sub_state = tuple(s if i in static else xp.take(s, rows, axis=0) for i, s in enumerate(state))
    log_probs, sub_state, weights = model.step(xp.take(tokens, rows), sub_state)
    state = tuple(
        s if i in static else ops.index_copy(s, rows, new)
        for i, (s, new) in enumerate(zip(state, sub_state, strict=True))
    )
    if weights is not None:
        P = weights.shape[1]
        zeros = xp.zeros((len(tokens), P), dtype=weights.dtype, device=device(weights))
        weights = ops.index_copy(zeros, rows, weights)
    return log_probs, state, weights


def _of_rows(xp, history, bonus, rows):
    """The history (R, t) and the unspent bonus (ids, values) of the hypotheses `rows`."""
    if rows is None:
        return history, bonus
    if bonus is not None:
        bonus = (xp.take(bonus[0], rows, axis=0), xp.take(bonus[1], rows, axis=0))
    return xp.take(history, rows, axis=0), bonus


def greedy(model, features, max_length: int | None = None, no_repeat_ngram: int = 0) -> Decoded:
    """The most probable word at every step, for a batch of images' features (N, ...)."""
    return beam_search(
        model, features, beam_size=1, max_length=max_length, no_repeat_ngram=no_repeat_ngram
    )


def beam_search(
    model,
    features,
    beam_size: int = 3,
    max_length: int | None = None,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
    word_bonus=None,
    no_end_after=None,
    required=None,
) -> Decoded:
    """Beam search over a batch of N images at once (N * beam_size hypotheses per step).

    features: (N, ...) arrays of the decoder's backend (torch tensors or NumPy arrays).
    A hypothesis ends with <end> (its log-probability counts) or after `max_length` words, then
    keeps its score. `length_penalty` a > 0 ranks the final beams by score / length**a; see
    `rules.constrain` for `no_repeat_ngram`, `word_bonus` (N, V) and `no_end_after` (V,) bool,
    and `constrained` for `required` (N, V) bool: the caption says one of the image's marked
    words when the search finds such a caption.
    """
    _check_arguments(beam_size, no_repeat_ngram)
    rules_of_search = _Rules(length_penalty, no_repeat_ngram, word_bonus, no_end_after, required)
    with backend(features)[1].inference():
        return _search(model, features, beam_size, max_length, rules_of_search)


@dataclass
class _Rules:
    """What a search must respect besides the model's scores (see `beam_search`)."""

    length_penalty: float
    no_repeat_ngram: int
    word_bonus: object
    no_end_after: object
    required: object


def _search(model, features, K: int, max_length: int | None, rule: _Rules) -> Decoded:
    cfg = model.config
    max_length = cfg.max_length if max_length is None else max_length
    state = model.init_state(features)
    xp, ops = backend(state[0])
    N, at = state[0].shape[0], device(state[0])
    like = xp.zeros((1,), device=at, dtype=xp.float32)
    need = constrained.required_rows(xp, ops, _on(xp, ops, rule.required, like), N, K)
    G = 1 if need is None else constrained.GROUPS  # groups of K hypotheses per image
    # Every group starts with K copies of its image's state; only the first copy of an image's
    # first group is live.
    state, static = rows_per_image(model, state, G * K)  # (N*G*K, ...); static entries (N, ...)
    dtype = xp.float64 if state[0].dtype == xp.float64 else xp.float32  # scores accumulate
    scores, tokens, finished, history = _start(xp, N * G, K, cfg.start_id, dtype, at, G)
    attn_history = None  # (N*G*K, t, P) for attention models
    banned = rules.banned(cfg)
    bonus = rules.per_hypothesis(xp, ops, rule.word_bonus, N, G * K, scores)  # (ids, values)
    early_stop = _early_stop(xp, model, rule, need, N)

    for _ in range(max_length):
        rows = _rows_to_step(finished, scores)  # (R,) | None: all
        log_probs, state, weights = _step_rows(xp, ops, model, tokens, state, rows, static)
        log_probs = rules.constrain(
            xp,
            ops,
            xp.astype(log_probs, dtype, copy=False),
            *_of_rows(xp, history, bonus, rows),
            rule.no_repeat_ngram,
            rule.no_end_after,
            cfg.end_id,
        )  # (R, V)
        scores, parent, word = _extend(
            xp, ops, scores, log_probs, rows, finished, banned, cfg.pad_id, need
        )
        parent = xp.reshape(parent, (-1,))  # (N*G*K,)
        # Static entries (the attention grid A) are one per image: reordering hypotheses within
        # an image leaves them as they are.
        state = tuple(s if i in static else xp.take(s, parent, axis=0) for i, s in enumerate(state))
        history = xp.concat([xp.take(history, parent, axis=0), xp.reshape(word, (-1, 1))], axis=1)
        if bonus is not None:  # a word's bonus is spent once the hypothesis has said it
            bonus = rules.spend(xp, bonus, parent, word)
        if weights is not None:
            w = xp.take(xp.astype(weights, dtype, copy=False), parent, axis=0)[:, None, :]
            attn_history = (
                w
                if attn_history is None
                else xp.concat([xp.take(attn_history, parent, axis=0), w], axis=1)
            )
        finished = rules.ended(xp, finished, parent, word, scores, bonus, cfg, early_stop)
        tokens = xp.reshape(word, (-1,))
        if bool(xp.all(finished)):
            break
    best = _best_of_beams(xp, ops, history, scores, attn_history, cfg, rule.length_penalty)
    if need is None:
        return best
    return Decoded(*constrained.answer(best.tokens, best.scores, best.attention))


def _start(xp, groups: int, K: int, start_id: int, dtype, at, G: int):
    """The search before its first word: scores (groups, K), all -inf but each image's first
    hypothesis (0); tokens (groups*K,) <start>; finished (groups, K); history (groups*K, 0)."""
    scores = xp.full((groups, K), -INF, device=at, dtype=dtype)
    scores[::G, 0] = 0.0  # an image's first group (state 0 with required words)
    tokens = xp.full((groups * K,), start_id, dtype=xp.int64, device=at)
    finished = xp.zeros((groups, K), dtype=xp.bool, device=at)
    history = xp.zeros((groups * K, 0), dtype=xp.int64, device=at)  # emitted ids incl. <end>
    return scores, tokens, finished, history


def _early_stop(xp, model, rule: _Rules, need, N: int):
    """Whether settled groups may stop early: only while scores can only fall (no length
    penalty, no step that can score above 0: a subtracted language model); with required
    words, (N*2,) bool: only the groups of images that have none."""
    early_stop = rule.length_penalty == 0 and bool(getattr(model, "steps_nonpositive", True))
    if early_stop and need is not None:
        return constrained.unconstrained(xp, need, N)
    return early_stop


def _on(xp, ops, array, like):
    """A per-image mask (N, V) on the search's backend and device, or None."""
    return None if array is None else ops.like(array, like, xp.bool)


def decode(
    model, features, options: DecodeOptions, word_bonus=None, no_end_after=None, required=None
) -> Decoded:
    """Beam search (greedy when beam_size is 1) with every setting taken from `options`;
    `word_bonus` (N, V) is the classifier guidance's prior when `options.guidance` > 0,
    `no_end_after` (V,) bool marks the ids of `options.no_end_after` and `required` (N, V) bool
    the words of the confident classes when `options.must_name` > 0."""
    return beam_search(
        model,
        features,
        beam_size=options.beam_size,
        max_length=options.max_length,
        length_penalty=options.length_penalty,
        no_repeat_ngram=options.no_repeat_ngram,
        word_bonus=word_bonus,
        no_end_after=no_end_after,
        required=required,
    )
