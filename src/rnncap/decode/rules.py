"""The rules of the one beam search, each written once for every array backend (NumPy or torch):
n-gram blocking, the classifier guidance's word bonus, the words a caption may not end on,
the early stop of settled images and length normalisation.

Every function takes `xp` (the arrays' array API namespace) and `ops` (`rnncap.decode.arrays`)
where it needs them; the arrays themselves stay on their device.
"""

from __future__ import annotations

from rnncap.decode.arrays import device

INF = float("inf")


def banned(config) -> list[int]:
    """Tokens a caption never contains: padding, <start> and <unk>."""
    return [config.pad_id, config.start_id, config.unk_id]


def normalise(score: float, length: int, length_penalty: float) -> float:
    """A finished caption's rank: score / length**a with a length penalty a > 0."""
    return score / max(length, 1) ** length_penalty if length_penalty > 0 else score


def words_before_end(sequence: list[int], cfg) -> list[int]:
    """Emitted ids up to (not including) the first <end> or padding."""
    for t, token in enumerate(sequence):
        if token in (cfg.end_id, cfg.pad_id):
            return sequence[:t]
    return sequence


def block_repeats(xp, ops, log_probs, history, n: int) -> None:
    """Forbid, in place, every word that would complete an n-gram already in the hypothesis.

    log_probs (B, V); history (B, t) the words emitted so far. For n = 2: if "in a" was emitted,
    "a" cannot follow "in" again. All earlier positions are compared at once (no loop over
    them, no wait for the device).
    """
    B, t = history.shape
    if t < n:
        return
    width = t - n + 1  # earlier (n-1)-grams, each followed by a word
    match = xp.ones((B, width), dtype=xp.bool, device=device(history))  # (B, t-n+1)
    for j in range(n - 1):  # earlier (n-1)-gram == the last n-1 words
        match &= history[:, j : j + width] == history[:, t - n + 1 + j : t - n + 2 + j]
    followers = history[:, n - 1 :]  # (B, t-n+1): the word that came after each of them
    # -inf onto each follower of a match, +inf (no change under min) onto the others; a word
    # that follows several earlier positions is blocked if any of them matches. Touches the
    # (B, t) followers only, never a dense (B, V) mask.
    dtype, at = log_probs.dtype, device(log_probs)
    low, high = (xp.asarray(v, dtype=dtype, device=at) for v in (-INF, INF))
    ops.scatter_min_(log_probs, followers, xp.where(match, low, high))


def per_hypothesis(xp, ops, word_bonus, N: int, K: int, like):
    """The images' word bonus (N, V), sparse, for each of their K hypotheses: (ids, values),
    each (N*K, M), M the most words with a bonus in one image (padded with value 0, ids in
    increasing order); None when no word has one. `like`: an array of the search's dtype and
    device, which the bonus takes.

    A few words per image carry a bonus: kept dense, every step would copy, add and sum an
    (N*K, V) array for them.
    """
    if word_bonus is None:
        return None
    if word_bonus.shape[0] != N:
        raise ValueError(f"word_bonus has {word_bonus.shape[0]} rows for {N} images")
    word_bonus = ops.like(word_bonus, like, like.dtype)
    nonzero = word_bonus != 0  # (N, V)
    M = int(xp.max(xp.sum(xp.astype(nonzero, xp.int64), axis=1))) if N > 0 else 0
    if M == 0:
        return None
    ids = xp.sort(ops.topk(xp.astype(nonzero, like.dtype), M)[1], axis=1)  # (N, M)
    values = xp.take_along_axis(word_bonus, ids, axis=1)  # (N, M)
    return xp.repeat(ids, K, axis=0), xp.repeat(values, K, axis=0)


def spend(xp, bonus, parent, word):
    """The unspent bonus after a step: each hypothesis's parent's, less the word just said."""
    ids, values = bonus  # ids are the image's: the same for a parent of the same image
    said = ids == xp.reshape(word, (-1, 1))
    return ids, xp.where(said, 0.0, xp.take(values, parent, axis=0))


def constrain(xp, ops, log_probs, history, bonus, no_repeat_ngram: int, no_end_after, end_id):
    """Next-word log-probabilities (R, V) of hypotheses that said `history` (R, t): plus
    the word bonus not yet spent (a word's bonus is paid once, a per-image prior), with every
    word blocked that would repeat an n-gram (n = no_repeat_ngram > 0), and no <end> right after
    a word marked in `no_end_after` (V,) bool. Beam size may exceed the vocabulary: impossible
    beams score -inf."""
    if bonus is not None:
        ops.scatter_add_(log_probs, *bonus)
    if no_repeat_ngram > 0:
        block_repeats(xp, ops, log_probs, history, no_repeat_ngram)
    if no_end_after is not None and history.shape[1] > 0:
        marked = ops.like(no_end_after, history)
        rows = xp.take(marked, history[:, -1])  # (R,) the last word is marked
        log_probs[:, end_id] = xp.where(rows, -INF, log_probs[:, end_id])
    return log_probs


def settled(xp, scores, finished, bonus):
    """(N,) bool: images whose best finished hypothesis already beats the most that any of
    their unfinished ones could still reach (scores (N, K), finished (N, K), bonus the word bonus
    not yet spent as (ids, values) from `per_hypothesis`, or None).

    A log-probability is <= 0 and each word's bonus is paid once, so an unfinished hypothesis
    ends at most at its score plus its unspent bonus. Once that is below an image's best finished
    score (ranked by the plain sum, no length penalty), that caption is the search's answer
    whatever the other hypotheses do next: they can stop. Only the rows that could never be
    chosen are cut short, so the captions and scores are the ones the full search returns.
    """
    N, K = scores.shape
    reach = scores
    if bonus is not None:
        reach = scores + xp.reshape(xp.sum(xp.clip(bonus[1], min=0), axis=1), (N, K))
    best_done = xp.max(xp.where(finished, scores, -INF), axis=1)  # (N,)
    best_going = xp.max(xp.where(finished, -INF, reach), axis=1)  # (N,)
    return best_done > best_going


def ended(xp, finished, parent, word, scores, bonus, cfg, early_stop):
    """(N, K) bool after a step: a hypothesis has ended when its parent had, when it just said
    <end> (or padding), or, with `early_stop` (True, or (N,) bool: the groups that may), when
    its group's search is settled."""
    N, K = word.shape
    inherited = xp.reshape(xp.take(xp.reshape(finished, (-1,)), parent), (N, K))
    done = inherited | (word == cfg.end_id) | (word == cfg.pad_id)
    if early_stop is False:
        return done
    stop = settled(xp, scores, done, bonus)  # (N,)
    if early_stop is not True:
        stop = stop & early_stop
    return done | stop[:, None]
