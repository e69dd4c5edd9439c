"""BLEU-1..4 (Papineni et al., 2002) as the COCO toolkit computes it.

Corpus BLEU sums clipped n-gram matches and candidate n-grams over all clips, with the
"closest" effective reference length (ties go to the shorter reference). The per-clip scores are
the toolkit's sentence-level BLEU, including its smoothing constants `tiny` and `small`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audiocap.metrics.ngrams import NgramTable, count_ngrams, lookup

TINY, SMALL = 1e-15, 1e-9  # the toolkit's guards against 0/0 (they shift scores by ~1e-9)


@dataclass(frozen=True)
class BleuResult:
    corpus: list[float]  # [BLEU-1, ..., BLEU-max_n]
    per_clip: np.ndarray  # (clips, max_n)


def closest_reference_length(candidate_length: int, reference_lengths: list[int]) -> int:
    return min((abs(length - candidate_length), length) for length in reference_lengths)[1]


def clipped_matches(table: NgramTable, clip_of_caption: np.ndarray, num_clips: int, max_n: int) -> np.ndarray:
    """(clips, max_n) candidate n-gram counts clipped by their maximum count in any reference."""
    is_candidate = clip_of_caption < 0  # candidates are marked -1 - clip
    candidate_clip = -1 - clip_of_caption
    ref = ~is_candidate[table.caption]
    ref_key = clip_of_caption[table.caption[ref]] * table.num_grams + table.gram[ref]
    order = np.argsort(ref_key, kind="stable")
    ref_key, ref_count = ref_key[order], table.count[ref][order]
    group_starts = np.flatnonzero(np.r_[True, ref_key[1:] != ref_key[:-1]])
    max_ref_key = ref_key[group_starts]
    max_ref_count = np.maximum.reduceat(ref_count, group_starts) if len(ref_key) else ref_count

    cand = ~ref
    clip = candidate_clip[table.caption[cand]]
    allowed = lookup(max_ref_key, max_ref_count, clip * table.num_grams + table.gram[cand])
    matches = np.minimum(table.count[cand], allowed)
    flat = np.bincount(clip * max_n + table.order[cand] - 1, weights=matches, minlength=num_clips * max_n)
    return flat.reshape(num_clips, max_n)


def bleu(
    candidates: list[str], references: list[list[str]], max_n: int = 4, table: NgramTable | None = None
) -> BleuResult:
    """BLEU of tokenized candidates (one per clip) against tokenized references (≥ 1 per clip).

    `table` may hold the n-gram counts of `candidates + flattened references`, shared with CIDEr-D.
    """
    num_clips = len(candidates)
    clip_of_caption = np.array(
        [-1 - i for i in range(num_clips)] + [i for i, refs in enumerate(references) for _ in refs], dtype=np.int64
    )
    table = table if table is not None else count_ngrams(candidates + [r for refs in references for r in refs], max_n)
    correct = clipped_matches(table, clip_of_caption, num_clips, max_n)
    candidate_lengths = table.lengths[:num_clips]
    guess = np.maximum(0, candidate_lengths[:, None] - np.arange(max_n)[None, :]).astype(np.float64)

    reference_lengths = np.split(table.lengths[num_clips:], np.cumsum([len(r) for r in references])[:-1])
    effective_lengths = np.array(
        [closest_reference_length(int(c), list(r)) for c, r in zip(candidate_lengths, reference_lengths)],
        dtype=np.float64,
    )

    # Per clip: the geometric mean of precisions 1..k, accumulated in the toolkit's order.
    per_clip = np.cumprod((correct + TINY) / (guess + SMALL), axis=1) ** (1.0 / np.arange(1, max_n + 1))
    ratio = (candidate_lengths + TINY) / (effective_lengths + SMALL)
    brevity = np.array([math.exp(1 - 1 / r) if r < 1 else 1.0 for r in ratio])
    per_clip = per_clip * brevity[:, None]

    corpus, product = [], 1.0
    for k in range(max_n):
        product *= float(correct[:, k].sum() + TINY) / (guess[:, k].sum() + SMALL)
        corpus.append(product ** (1.0 / (k + 1)))
    corpus_ratio = (candidate_lengths.sum() + TINY) / (effective_lengths.sum() + SMALL)
    if corpus_ratio < 1:
        corpus = [score * math.exp(1 - 1 / corpus_ratio) for score in corpus]
    return BleuResult(corpus=corpus, per_clip=per_clip)
