"""BLEU-1..4 (Papineni et al., 2002) as the COCO toolkit computes it.

Corpus BLEU sums clipped n-gram matches and candidate n-grams over all clips, with the
"closest" effective reference length (ties go to the shorter reference). The per-clip scores are
the toolkit's sentence-level BLEU, including its smoothing constants `tiny` and `small`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audiocap.metrics.ngrams import Captions, run_starts

TINY, SMALL = 1e-15, 1e-9  # the toolkit's guards against 0/0 (they shift scores by ~1e-9)


@dataclass(frozen=True)
class BleuCounts:
    """What corpus BLEU sums over clips; counts of chunks of one corpus add up to the corpus' (`+`)."""
    correct: np.ndarray  # (max_n,) candidate n-grams matched, clipped by the references' counts
    guess: np.ndarray  # (max_n,) candidate n-grams
    candidate_length: float  # candidate tokens
    reference_length: float  # the reference length closest to each candidate's

    def __add__(self, other: BleuCounts) -> BleuCounts:
        # sums of integers: exact in float64 in any order
        return BleuCounts(self.correct + other.correct, self.guess + other.guess,
                          self.candidate_length + other.candidate_length, self.reference_length + other.reference_length)

    def bleu(self) -> list[float]:
        """[BLEU-1, ..., BLEU-max_n] of the clips counted, with the toolkit's brevity penalty and constants."""
        corpus, product = [], 1.0
        for k in range(len(self.correct)):
            product *= float(self.correct[k] + TINY) / (self.guess[k] + SMALL)
            corpus.append(product ** (1.0 / (k + 1)))
        ratio = (self.candidate_length + TINY) / (self.reference_length + SMALL)
        if ratio < 1:
            corpus = [score * math.exp(1 - 1 / ratio) for score in corpus]
        return corpus


@dataclass(frozen=True)
class BleuResult:
    corpus: list[float]  # [BLEU-1, ..., BLEU-max_n]
    per_clip: np.ndarray  # (clips, max_n)
    counts: BleuCounts


def closest_reference_lengths(candidate_lengths: np.ndarray, reference_lengths: np.ndarray,
                              reference_clip: np.ndarray) -> np.ndarray:
    """Per clip, the reference length closest to the candidate's (the shorter one on ties).

    `reference_clip` is sorted and names every clip at least once."""
    # Minimize (|difference|, length) lexicographically, as one integer per reference.
    scale = int(reference_lengths.max(initial=0)) + 1
    distance = np.abs(reference_lengths - candidate_lengths[reference_clip])
    best = np.minimum.reduceat(distance * scale + reference_lengths, np.flatnonzero(run_starts(reference_clip)))
    return best % scale


def clipped_matches(captions: Captions) -> np.ndarray:
    """(clips, max_n) candidate n-gram counts clipped by their maximum count in any reference."""
    table, groups, num_clips, max_n = captions.ngrams, captions.reference_groups, captions.num_clips, captions.max_n
    reference_count = table.count[groups.is_reference]
    max_count = np.maximum.reduceat(reference_count, groups.starts) if len(groups.starts) else reference_count
    max_count = np.append(max_count, 0)  # so that group -1 (in no reference) allows 0
    candidate = ~groups.is_reference
    clip = table.caption[candidate]
    matches = np.minimum(table.count[candidate], max_count[groups.candidate_group])
    flat = np.bincount(clip * max_n + table.order[candidate] - 1, weights=matches, minlength=num_clips * max_n)
    return flat.reshape(num_clips, max_n)


def bleu(candidates: list[str], references: list[list[str]], max_n: int = 4) -> BleuResult:
    """BLEU of tokenized candidates (one per clip) against tokenized references (≥ 1 per clip)."""
    return bleu_of(Captions.of(candidates, references, max_n=max_n))


def bleu_of(captions: Captions) -> BleuResult:
    """BLEU-1..captions.max_n of captions already split into tokens (as `str.split()` does)."""
    num_clips, max_n = captions.num_clips, captions.max_n
    correct = clipped_matches(captions)
    candidate_lengths = captions.lengths[:num_clips]
    guess = np.maximum(0, candidate_lengths[:, None] - np.arange(max_n)[None, :]).astype(np.float64)
    reference_lengths = captions.lengths[num_clips:]
    effective_lengths = closest_reference_lengths(candidate_lengths, reference_lengths, captions.reference_clip)

    # Per clip: the geometric mean of precisions 1..k, accumulated in the toolkit's order.
    per_clip = np.cumprod((correct + TINY) / (guess + SMALL), axis=1) ** (1.0 / np.arange(1, max_n + 1))
    ratio = (candidate_lengths + TINY) / (effective_lengths + SMALL)
    brevity = np.exp(1 - 1 / np.minimum(ratio, 1.0))  # exp(0) = 1 when the candidate is long enough
    per_clip = per_clip * brevity[:, None]
    counts = BleuCounts(correct.sum(axis=0), guess.sum(axis=0), float(candidate_lengths.sum()),
                        float(effective_lengths.sum()))
    return BleuResult(corpus=counts.bleu(), per_clip=per_clip, counts=counts)
