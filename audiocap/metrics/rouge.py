"""ROUGE-L (Lin, 2004) as the COCO toolkit computes it: F-measure with β = 1.2 of the longest
common subsequence, taking the best precision and the best recall over the references
separately, averaged over clips.
"""
from __future__ import annotations

import numpy as np

from audiocap.metrics.ngrams import Captions, run_starts

BETA = 1.2
WORD = 64  # bits per machine word of the bit-parallel LCS


def lcs_lengths(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Longest-common-subsequence length of each pair of rows (first[p], second[p]), all at once.

    Rows hold token ids (≥ 1), padded at the end with 0. Bit-parallel LCS
    (Allison & Dix, 1986; Hyyrö, 2004): bit j of V is 0 where row i of the dynamic programme
    steps up at column j, so the LCS is the number of 0 bits, and one row of the programme is
    V ← (V + (V & M)) | (V & ~M), with M the positions in `second` of the token first[p, i].
    Rows longer than 64 tokens span several words, the addition carrying from one to the next.
    Bits beyond the end of `second` never match, so they stay 1 and need no masking.
    """
    pairs, width = second.shape
    words = max(1, -(-width // WORD))
    second = np.where(second > 0, second, -1)  # padding of `second` must not match padding of `first`
    bits = np.zeros((pairs, words * WORD // 8), dtype=np.uint8)  # bytes past `width` stay 0: no match
    v = np.full((pairs, words), np.iinfo(np.uint64).max, dtype=np.uint64)
    for i in range(first.shape[1]):
        # Little-endian bit and byte order: bit j of word w is column 64 w + j.
        packed = np.packbits(first[:, i : i + 1] == second, axis=1, bitorder="little")
        bits[:, : packed.shape[1]] = packed
        matches = bits.view("<u8")
        u = v & matches
        total = v + u
        if words > 1:  # carry the addition from word to word, as in a multi-word integer
            carry = np.zeros(pairs, dtype=np.uint64)
            for w in range(words):
                total[:, w] = v[:, w] + u[:, w] + carry
                carry = ((total[:, w] < v[:, w]) | ((total[:, w] == v[:, w]) & (carry == 1))).astype(np.uint64)
        v = total | (v & ~matches)
    return words * WORD - np.unpackbits(v.view(np.uint8), axis=1).sum(axis=1, dtype=np.int64)


def rouge_l(candidates: list[str], references: list[list[str]]) -> tuple[float, np.ndarray]:
    """(mean ROUGE-L, per-clip ROUGE-L) of tokenized candidates against tokenized references."""
    # The toolkit splits on single spaces: "" is one (empty) token.
    return rouge_l_of(Captions.of(candidates, references, separator=" "))


def rouge_l_of(captions: Captions) -> tuple[float, np.ndarray]:
    """ROUGE-L of captions already split into tokens. A caption of no tokens counts as the
    toolkit's one empty token, which matches only another empty caption's."""
    lengths = np.maximum(captions.lengths, 1)
    num_clips, reference_clip = captions.num_clips, captions.reference_clip
    lcs = pair_lcs(captions, reference_clip, np.arange(num_clips, len(lengths)))

    precision = lcs / lengths[reference_clip]
    recall = lcs / lengths[num_clips:]
    starts = np.flatnonzero(run_starts(reference_clip))
    best_precision = np.maximum.reduceat(precision, starts)
    best_recall = np.maximum.reduceat(recall, starts)
    both = (best_precision != 0) & (best_recall != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = ((1 + BETA**2) * best_precision * best_recall) / (best_recall + BETA**2 * best_precision)
    scores = np.where(both, f, 0.0)
    return float(np.mean(scores)), scores


PAIRS_PER_PASS = 1 << 16  # pairs in one call of lcs_lengths: bounds its arrays whatever the number of rows


def pair_lcs(captions: Captions, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """LCS length of captions first[p] and second[p] for every pair p. Pairs are grouped by length (the longer
    caption of a pair within a power of two) and each group is padded to its own longest caption only, the
    shorter caption of each pair being the one stepped through: the time is about Σ short · ⌈long / 64⌉, so
    one very long caption costs only its own pairs, not every pair of the corpus."""
    lengths = np.maximum(captions.lengths, 1)
    offsets = np.concatenate([[0], np.cumsum(captions.lengths)[:-1]])
    empty_token = int(captions.tokens.max(initial=0)) + 1  # the toolkit's "" token: matches only itself
    shorter = np.where(lengths[first] <= lengths[second], first, second)
    longer = np.where(lengths[first] <= lengths[second], second, first)
    classes = np.ceil(np.log2(lengths[longer])).astype(np.int64)
    order = np.lexsort((lengths[shorter], classes))
    out = np.empty(len(first), dtype=np.int64)
    for start in range(0, len(order), PAIRS_PER_PASS):
        for size_class in np.unique(classes[order[start:start + PAIRS_PER_PASS]]):
            chunk = order[start:start + PAIRS_PER_PASS]
            chunk = chunk[classes[chunk] == size_class]
            out[chunk] = lcs_lengths(padded_tokens(captions, offsets, empty_token, shorter[chunk]),
                                     padded_tokens(captions, offsets, empty_token, longer[chunk]))
    return out


def padded_tokens(captions: Captions, offsets: np.ndarray, empty_token: int, rows: np.ndarray) -> np.ndarray:
    """Token ids of captions `rows`, right-padded with 0 to the longest of them; an empty caption is `empty_token`."""
    lengths = captions.lengths[rows]
    width = max(1, int(lengths.max(initial=0)))
    columns = np.arange(width)
    valid = columns < lengths[:, None]
    positions = np.where(valid, offsets[rows][:, None] + columns, 0)
    padded = np.where(valid, captions.tokens[positions] if len(captions.tokens) else 0, 0)
    padded[lengths == 0, 0] = empty_token
    return padded
