"""Constrained beam search (Anderson et al. 2017) for one constraint: the caption says one of a
set of required words, chosen per image (classifier guidance's words of the classes the
encoder's classifier is sure of: "cat" for a tabby, "coffee" for an espresso).

Each image's hypotheses form two groups of K: those that have not said a required word (state
0) and those that have (state 1). A state-0 hypothesis goes on in state 0 with any other word
and moves to state 1 with a required one; a state-1 hypothesis stays there. Each group keeps its
own K best, so a required word that the model finds unlikely is still carried forward by the
few hypotheses that said it, and the search answers with state 1's best caption when it found
one, with state 0's otherwise. An image with no required word is searched as without the rule.

Rows: image n's groups are 2n (state 0) and 2n + 1 (state 1), its rows 2nK .. 2nK + 2K - 1.
"""

from __future__ import annotations

import math

from rnncap.decode.arrays import device

GROUPS = 2  # groups per image: state 0 (no required word said yet) and state 1
INF = float("inf")


def required_rows(xp, ops, required, N: int, K: int):
    """The required words (N, V) bool, per row of the search: (ids, valid), each (N*2*K, M),
    M the most required words of one image (padded, valid False); valid only on the rows of
    state 0, which are the rows that can still say them. None when no image has one."""
    if required is None:
        return None
    if required.shape[0] != N:
        raise ValueError(f"required has {required.shape[0]} rows for {N} images")
    counts = xp.sum(xp.astype(required, xp.int64), axis=1)  # (N,)
    M = int(xp.max(counts)) if N > 0 else 0
    if M == 0:
        return None
    ids = xp.sort(ops.topk(xp.astype(required, xp.float32), M)[1], axis=1)  # (N, M)
    valid = xp.take_along_axis(required, ids, axis=1)  # (N, M)
    ids, valid = xp.repeat(ids, GROUPS * K, axis=0), xp.repeat(valid, GROUPS * K, axis=0)
    row = xp.arange(N * GROUPS * K, dtype=xp.int64, device=device(ids))
    state0 = xp.reshape((row // K) % GROUPS == 0, (-1, 1))  # (N*2*K, 1)
    return ids, valid & state0


def unconstrained(xp, need, N: int):
    """(N*2,) bool: the groups of images with no required word, whose search may stop early."""
    valid = xp.reshape(need[1], (N, -1))  # (N, 2*K*M)
    free = ~xp.any(valid, axis=1)  # (N,)
    return xp.repeat(free, GROUPS, axis=0)


def split_offers(xp, ops, log_probs, need, rows):
    """The next-word log-probabilities (R, V) of the stepped hypotheses `rows` (None: all) ->
    those of their required words (R, M), -inf where a row has none (state 1, padding); the
    required words are then removed, in place, from what the row offers its own group."""
    ids, valid = need
    if rows is not None:
        ids, valid = xp.take(ids, rows, axis=0), xp.take(valid, rows, axis=0)
    dtype, at = log_probs.dtype, device(log_probs)
    low, high = (xp.asarray(v, dtype=dtype, device=at) for v in (-INF, INF))
    said = xp.where(valid, xp.take_along_axis(log_probs, ids, axis=1), low)  # (R, M)
    ops.scatter_min_(log_probs, ids, xp.where(valid, low, high))
    return said


def select(xp, ops, stay, stay_words, cross, need, K: int, pad_id: int):
    """Each group's K best -> (scores, parent row, word), each (G, K), G = N*2 groups.

    stay (G*K, K): each row's offers to its own group (scores so far plus the word's), with
    their words; cross (G*K, M): each row's offers of its required words, which go to the next
    group (state 0 -> state 1 of the same image). A state-1 group picks among its own rows'
    offers and its image's state-0 rows' required words; a state-0 group among its own."""
    G = stay.shape[0] // K
    N, M = G // GROUPS, cross.shape[1]
    ids, valid = need
    cross_words = xp.where(valid, ids, pad_id)
    at = device(stay)
    into = xp.reshape(cross, (N, GROUPS, K * M))[:, :1, :]  # (N, 1, K*M) state 0's offers
    into_words = xp.reshape(cross_words, (N, GROUPS, K * M))[:, :1, :]
    none = xp.full((N, 1, K * M), -INF, dtype=stay.dtype, device=at)
    nothing = xp.full((N, 1, K * M), pad_id, dtype=into_words.dtype, device=at)
    into = xp.reshape(xp.concat([none, into], axis=1), (G, K * M))  # (G, K*M)
    into_words = xp.reshape(xp.concat([nothing, into_words], axis=1), (G, K * M))
    offers = xp.concat([xp.reshape(stay, (G, K * K)), into], axis=1)  # (G, K*K + K*M)
    words = xp.concat([xp.reshape(stay_words, (G, K * K)), into_words], axis=1)
    scores, pick = ops.topk(offers, K)  # (G, K)
    group = xp.reshape(xp.arange(G, dtype=xp.int64, device=at), (G, 1))
    own = group * K + pick // K  # a row of the group itself
    crossed = (group - 1) * K + (pick - K * K) // M  # a state-0 row of the image
    parent = xp.where(pick < K * K, own, xp.clip(crossed, min=0))
    return scores, parent, xp.take_along_axis(words, pick, axis=1)


def answer(decoded_tokens, decoded_scores, attention):
    """Per group (2N) best captions -> per image: state 1's when it found one, else state 0's.
    Returns (tokens, scores, attention | None), each N long."""
    tokens, scores, maps = [], [], []
    for n in range(len(decoded_tokens) // GROUPS):
        g = GROUPS * n + 1 if math.isfinite(decoded_scores[GROUPS * n + 1]) else GROUPS * n
        tokens.append(decoded_tokens[g])
        scores.append(decoded_scores[g])
        maps.append(None if attention is None else attention[g])
    return tokens, scores, (None if attention is None else maps)
