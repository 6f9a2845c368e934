"""CIDEr-D (Vedantam et al., 2015) exactly as pycocoevalcap 1.2 computes it, in NumPy, without Java.

`cider_d` scores a corpus; `CiderD` indexes a split's references once and then scores many
candidates per call (the self-critical sequence training reward).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from rnncap.engine.ptb_tokenize import ptb_tokenize

Caption = str | Sequence[str]  # a raw string, or tokens that are already PTB-tokenised


def _tokens(caption: Caption, tokenize: bool) -> list[str]:
    if isinstance(caption, str):
        return ptb_tokenize(caption) if tokenize else caption.split()
    return list(caption)


def _starts(lengths: np.ndarray, order: int) -> np.ndarray:
    """Flat positions where an n-gram of `order` words starts, for sequences laid end to end."""
    seq_start = np.cumsum(lengths) - lengths  # (S,)
    fits = np.maximum(lengths - order + 1, 0)  # (S,) number of such n-grams per sequence
    seq = np.repeat(np.arange(len(lengths)), fits)
    return np.arange(fits.sum()) - np.repeat(np.cumsum(fits) - fits, fits) + seq_start[seq]


def _index_ngrams(
    words: np.ndarray, lengths: np.ndarray, n: int, word_count: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Dense ids of every n-gram, orders 1..n, built as (id of the (k-1)-gram prefix, last word).

    words: (L,) int64 word ids in [0, word_count) of all sequences laid end to end;
    lengths: (S,) words per sequence. Returns per order (starts (P,), ids (P,), codes (U,)):
    the k-gram starting at flat position starts[i] has id ids[i], the index of its code in the
    sorted unique `codes` (code = prefix id * word_count + last word).
    """
    out = []
    prefix_ids = np.full(len(words), -1, dtype=np.int64)  # (L,) id of the (k-1)-gram starting here
    for order in range(1, n + 1):
        starts = _starts(lengths, order)
        if order == 1:
            codes = words[starts]
        else:
            codes = prefix_ids[starts] * word_count + words[starts + order - 1]
        unique_codes, ids = np.unique(codes, return_inverse=True)
        out.append((starts, ids.astype(np.int64), unique_codes))
        prefix_ids[:] = -1
        prefix_ids[starts] = ids
    return out


def _lookup_ngrams(
    words: np.ndarray, lengths: np.ndarray, codes: list[np.ndarray], word_count: int
) -> list[np.ndarray]:
    """Ids, in the indexing `codes` came from, of every n-gram of `words` (-1: not in it).

    words: (L,) int64, -1 for words outside the indexed vocabulary. Returns per order (P,) ids
    aligned with `_starts(lengths, order)`.
    """
    out = []
    prefix_ids = np.full(len(words), -1, dtype=np.int64)
    for order, unique_codes in enumerate(codes, start=1):
        starts = _starts(lengths, order)
        last = words[starts + order - 1]
        prefix = np.zeros_like(last) if order == 1 else prefix_ids[starts]
        query = last if order == 1 else prefix * word_count + last
        ids = np.full(len(starts), -1, dtype=np.int64)
        if len(unique_codes):
            at = np.minimum(np.searchsorted(unique_codes, query), len(unique_codes) - 1)
            ids = np.where((prefix >= 0) & (last >= 0) & (unique_codes[at] == query), at, -1)
        out.append(ids)
        prefix_ids[:] = -1
        prefix_ids[starts] = ids
    return out


def _term_frequencies(
    seq_of_position: np.ndarray, starts: np.ndarray, ids: np.ndarray, id_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence, n-gram id, count) for each distinct n-gram of each sequence; (D,) arrays."""
    keys = seq_of_position[starts] * id_count + ids
    unique_keys, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return unique_keys // id_count, first, counts.astype(np.float64)


def _word_ids(token_lists: Sequence[Sequence[str]]) -> dict[str, int]:
    """Each distinct word -> an id, in order of first appearance."""
    ids: dict[str, int] = {}
    for tokens in token_lists:
        for word in tokens:
            ids.setdefault(word, len(ids))
    return ids


class CiderD:
    """CIDEr-D against fixed references: document frequencies and reference vectors are built once.

    references: one entry per image, each a non-empty list of captions (raw strings, PTB-tokenised
    here when `tokenize`, else split on spaces; or token lists). Document frequencies come from
    these references and the idf uses log(number of images), as pycocoevalcap does for its corpus.
    """

    def __init__(
        self,
        references: Sequence[Sequence[Caption]],
        n: int = 4,
        sigma: float = 6.0,
        tokenize: bool = True,
    ) -> None:
        if len(references) == 0:
            raise ValueError("CiderD needs references for at least one image")
        if any(len(refs) == 0 for refs in references):
            raise ValueError("every image needs at least one reference caption")
        self.n, self.sigma, self.tokenize = n, sigma, tokenize
        self.image_count = len(references)
        self.ref_len = float(np.log(float(self.image_count)))  # log of the number of images

        ref_tokens = [_tokens(c, tokenize) for refs in references for c in refs]
        self.refs_per_image = np.array([len(refs) for refs in references])  # (I,)
        image_of_row = np.repeat(np.arange(self.image_count), self.refs_per_image)  # (Rows,)
        slot_of_row = np.arange(len(ref_tokens)) - np.repeat(
            np.cumsum(self.refs_per_image) - self.refs_per_image, self.refs_per_image
        )
        self.max_refs = int(self.refs_per_image.max())

        self.word_ids = _word_ids(ref_tokens)
        words = np.array([self.word_ids[w] for t in ref_tokens for w in t], dtype=np.int64)
        lengths = np.array([len(t) for t in ref_tokens], dtype=np.int64)
        row_of_position = np.repeat(np.arange(len(ref_tokens)), lengths)

        self._codes: list[np.ndarray] = []  # per order: sorted codes of the reference n-grams
        self._idf: list[np.ndarray] = []  # per order: (U,) ref_len - log(max(1, df))
        self._entry_keys: list[np.ndarray] = []  # per order: sorted image * U + n-gram id
        self._entry_tf: list[np.ndarray] = []  # per order: (E, max_refs) counts in each reference
        ref_norm_sq = np.zeros((len(ref_tokens), n))  # (Rows, n)
        for order, (starts, ids, codes) in enumerate(
            _index_ngrams(words, lengths, n, max(len(self.word_ids), 1))
        ):
            row, first, tf = _term_frequencies(row_of_position, starts, ids, len(codes))
            ngram = ids[first]
            entry_keys, entry_of = np.unique(
                image_of_row[row] * len(codes) + ngram, return_inverse=True
            )
            df = np.bincount(entry_keys % len(codes), minlength=len(codes))  # images per n-gram
            idf = self.ref_len - np.log(np.maximum(1.0, df))
            entry_tf = np.zeros((len(entry_keys), self.max_refs), dtype=np.float32)
            entry_tf[entry_of, slot_of_row[row]] = tf
            ref_norm_sq[:, order] = np.bincount(
                row, weights=(tf * idf[ngram]) ** 2, minlength=len(ref_tokens)
            )
            self._codes.append(codes)
            self._idf.append(idf)
            self._entry_keys.append(entry_keys)
            self._entry_tf.append(entry_tf)

        # (I, n, max_refs) reference norms and (I, max_refs) lengths; unused slots stay 0
        self._ref_norm = np.zeros((self.image_count, n, self.max_refs))
        self._ref_norm[image_of_row, :, slot_of_row] = np.sqrt(ref_norm_sq)
        self._ref_length = np.zeros((self.image_count, self.max_refs))
        self._ref_length[image_of_row, slot_of_row] = self._length(lengths)

    def _length(self, lengths: np.ndarray) -> np.ndarray:
        """pycocoevalcap's caption length: its number of bigrams (0 when n < 2)."""
        return np.maximum(lengths - 1, 0).astype(np.float64) if self.n >= 2 else lengths * 0.0

    def _candidate_word_ids(self, cand_tokens: list[list[str]]):
        """(known (L,) reference word ids, -1 for unseen; local (L,) ids; local id count).

        Words absent from the references get ids after the reference vocabulary, so that
        repeated unseen n-grams are still counted together within a candidate.
        """
        flat = [w for t in cand_tokens for w in t]
        known = [self.word_ids.get(w, -1) for w in flat]
        unknown: dict[str, int] = {}
        local = [
            i if i >= 0 else unknown.setdefault(w, len(self.word_ids) + len(unknown))
            for w, i in zip(flat, known, strict=True)
        ]
        word_count = max(len(self.word_ids) + len(unknown), 1)
        return np.array(known, dtype=np.int64), np.array(local, dtype=np.int64), word_count

    def score(
        self, image_indices: Sequence[int] | np.ndarray, candidates: Sequence[Caption]
    ) -> np.ndarray:
        """Per-candidate CIDEr-D, shape (K,), of candidates[k] against image image_indices[k]."""
        images = np.asarray(image_indices, dtype=np.int64).reshape(-1)  # (K,)
        if len(images) != len(candidates):
            raise ValueError(f"{len(images)} image indices for {len(candidates)} candidates")
        if len(images) and (images.min() < 0 or images.max() >= self.image_count):
            raise ValueError(f"image indices must lie in [0, {self.image_count})")
        k_count, n, max_refs = len(images), self.n, self.max_refs
        cand_tokens = [_tokens(c, self.tokenize) for c in candidates]
        lengths = np.array([len(t) for t in cand_tokens], dtype=np.int64)  # (K,)
        known_words, local_words, word_count = self._candidate_word_ids(cand_tokens)
        cand_of_position = np.repeat(np.arange(k_count), lengths)

        known_ids = _lookup_ngrams(known_words, lengths, self._codes, max(len(self.word_ids), 1))
        dot = np.zeros((k_count, n, max_refs))  # clipped tf-idf products with each reference
        norm_sq = np.zeros((k_count, n))
        for order, (starts, local_ids, codes) in enumerate(
            _index_ngrams(local_words, lengths, n, word_count)
        ):
            cand, first, tf = _term_frequencies(cand_of_position, starts, local_ids, len(codes))
            ngram = known_ids[order][first]  # (D,) reference n-gram id, -1 when unseen
            seen = ngram >= 0
            idf = np.full(len(ngram), self.ref_len)  # unseen n-grams: df 0 -> log(max(1, 0)) = 0
            idf[seen] = self._idf[order][ngram[seen]]
            vec = tf * idf  # (D,) candidate tf-idf
            norm_sq[:, order] = np.bincount(cand, weights=vec**2, minlength=k_count)

            # the candidate's n-grams that occur in its own image's references
            entry_keys = self._entry_keys[order]
            if len(entry_keys) == 0:
                continue
            cand, ngram, vec = cand[seen], ngram[seen], vec[seen]
            query = images[cand] * len(self._codes[order]) + ngram
            entry = np.minimum(np.searchsorted(entry_keys, query), len(entry_keys) - 1)
            hit = entry_keys[entry] == query
            cand, entry, vec = cand[hit], entry[hit], vec[hit]
            ref_vec = self._entry_tf[order][entry] * self._idf[order][ngram[hit]][:, None]
            clipped = np.minimum(vec[:, None], ref_vec) * ref_vec  # (M, max_refs)
            dot[:, order, :] = np.bincount(
                (cand[:, None] * max_refs + np.arange(max_refs)).ravel(),
                weights=clipped.ravel(),
                minlength=k_count * max_refs,
            ).reshape(k_count, max_refs)

        norm_product = np.sqrt(norm_sq)[:, :, None] * self._ref_norm[images]  # (K, n, max_refs)
        cosine = np.divide(dot, norm_product, out=dot.copy(), where=norm_product != 0)
        delta = self._length(lengths)[:, None] - self._ref_length[images]  # (K, max_refs)
        penalty = np.e ** (-(delta**2) / (2 * self.sigma**2))
        per_ref = cosine * penalty[:, None, :]  # unused reference slots hold 0
        return per_ref.sum(axis=2).mean(axis=1) / self.refs_per_image[images] * 10.0


def cider_d_per_image(
    references: Mapping[Hashable, Sequence[Caption]],
    predictions: Mapping[Hashable, Caption],
    tokenize: bool = True,
) -> np.ndarray:
    """CIDEr-D of each image's prediction, shape (I,), in the order of `references`' ids; its
    mean is the corpus score (`cider_d`). Document frequencies come from these references."""
    if set(references) != set(predictions):
        raise ValueError("references and predictions must have the same image ids")
    ids = list(references)
    scorer = CiderD([references[i] for i in ids], tokenize=tokenize)
    return scorer.score(np.arange(len(ids)), [predictions[i] for i in ids])


def cider_d(
    references: Mapping[Hashable, Sequence[Caption]],
    predictions: Mapping[Hashable, Caption],
    tokenize: bool = True,
) -> float:
    """Corpus CIDEr-D of one prediction per image, equal to pycocoevalcap's `Cider` score.

    Raw strings are PTB-tokenised like pycocoevalcap does (`tokenize=False`: already tokenised,
    split on spaces). Document frequencies come from these references.
    """
    return float(cider_d_per_image(references, predictions, tokenize).mean())
