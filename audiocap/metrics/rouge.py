"""ROUGE-L (Lin, 2004) as the COCO toolkit computes it: F-measure with β = 1.2 of the longest
common subsequence, taking the best precision and the best recall over the references
separately, averaged over clips.
"""
from __future__ import annotations

import numpy as np

BETA = 1.2


def lcs_lengths(first: list[list[int]], second: list[list[int]]) -> np.ndarray:
    """Longest-common-subsequence length of each pair (first[p], second[p]), all pairs at once.

    Row i of the dynamic programme is max(row i-1 shifted and +1 on matches, row i-1),
    carried forward by a running maximum along the row (the `lengths[i][j-1]` term).
    """
    pairs = len(first)
    width = max((len(s) for s in second), default=0)
    height = max((len(f) for f in first), default=0)
    columns = np.full((pairs, width), -1, dtype=np.int64)  # -1/-2 padding never matches
    rows = np.full((pairs, height), -2, dtype=np.int64)
    for p, (f, s) in enumerate(zip(first, second)):
        rows[p, : len(f)] = f
        columns[p, : len(s)] = s
    previous = np.zeros((pairs, width + 1), dtype=np.int64)
    for i in range(height):
        match = rows[:, i : i + 1] == columns
        current = np.maximum(previous[:, 1:], previous[:, :-1] + match)
        previous = np.concatenate([previous[:, :1], np.maximum.accumulate(current, axis=1)], axis=1)
    return previous[np.arange(pairs), [len(s) for s in second]]


def rouge_l(candidates: list[str], references: list[list[str]]) -> tuple[float, np.ndarray]:
    """(mean ROUGE-L, per-clip ROUGE-L) of tokenized candidates against tokenized references."""
    vocabulary: dict[str, int] = {}

    def ids(caption: str) -> list[int]:  # the toolkit splits on single spaces: "" is one empty token
        return [vocabulary.setdefault(t, len(vocabulary)) for t in caption.split(" ")]

    candidate_ids = [ids(c) for c in candidates]
    pair_candidate = [candidate_ids[i] for i, refs in enumerate(references) for _ in refs]
    pair_reference = [ids(r) for refs in references for r in refs]
    lcs = lcs_lengths(pair_reference, pair_candidate)

    precision = lcs / np.array([len(c) for c in pair_candidate], dtype=np.float64)
    recall = lcs / np.array([len(r) for r in pair_reference], dtype=np.float64)
    starts = np.cumsum([0] + [len(r) for r in references[:-1]])
    best_precision = np.maximum.reduceat(precision, starts)
    best_recall = np.maximum.reduceat(recall, starts)
    both = (best_precision != 0) & (best_recall != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = ((1 + BETA**2) * best_precision * best_recall) / (best_recall + BETA**2 * best_precision)
    scores = np.where(both, f, 0.0)
    return float(np.mean(scores)), scores
