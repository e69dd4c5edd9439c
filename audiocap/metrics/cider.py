"""CIDEr-D (Vedantam et al., 2015) as the COCO toolkit computes it.

Each caption becomes, for n = 1..4, a TF-IDF vector of its n-grams, with document frequencies
counted over the clips' reference sets of *this* evaluation. A candidate's score against one
reference is the cosine similarity with the candidate weights clipped at the reference's
("-D": no gaming by repetition), times a Gaussian penalty exp(-δ²/2σ²) on the length difference δ;
averaged over n and references, times 10.

The toolkit measures δ in *bigram* counts (its `length` counts only n = 2 entries), which equals
the token-count difference unless a caption is empty; we keep its definition.
"""
from __future__ import annotations

import numpy as np

from audiocap.metrics.document_frequency import DocumentFrequencies
from audiocap.metrics.ngrams import Captions, run_starts

SIGMA = 6.0


def cider_d(candidates: list[str], references: list[list[str]], sigma: float = SIGMA) -> tuple[float, np.ndarray]:
    """(mean CIDEr-D, per-clip CIDEr-D) of tokenized candidates against tokenized references."""
    return cider_d_of(Captions.of(candidates, references), sigma)


def cider_d_of(captions: Captions, sigma: float = SIGMA,
               frequencies: DocumentFrequencies | None = None) -> tuple[float, np.ndarray]:
    """CIDEr-D (over 1..captions.max_n-grams, 4 in the toolkit) of captions already split into
    tokens (as `str.split()` does). `frequencies`: the document frequencies of the whole corpus when
    `captions` is one chunk of it (token ids from one vocabulary); by default, those of `captions`."""
    table, groups, max_n = captions.ngrams, captions.reference_groups, captions.max_n
    num_clips, reference_clip = captions.num_clips, captions.reference_clip
    refs_per_clip = np.bincount(reference_clip, minlength=num_clips)
    is_reference = groups.is_reference

    frequencies = frequencies or DocumentFrequencies.of([captions])
    log_num_clips = np.log(float(frequencies.num_clips))
    weight = table.count * (log_num_clips - np.log(np.maximum(1.0, frequencies.of_grams(captions)[table.gram])))

    num_captions = len(table.lengths)
    slot = table.caption * max_n + table.order - 1
    norm = np.sqrt(np.bincount(slot, weights=weight**2, minlength=num_captions * max_n)).reshape(-1, max_n)
    bigrams = np.maximum(table.lengths - 1, 0)  # bigrams per caption, repeats included

    # Clipped dot product over the n-grams each reference shares with its clip's candidate:
    # every candidate row hands its weight to its group (candidates in no group write to the
    # extra last slot, which no reference reads).
    group_weight = np.zeros(len(groups.starts) + 1)
    group_weight[groups.candidate_group] = weight[~is_reference]
    reference_weight = weight[is_reference]
    dot = np.bincount(
        slot[is_reference] - num_clips * max_n,
        weights=np.minimum(group_weight[groups.group], reference_weight) * reference_weight,
        minlength=len(reference_clip) * max_n,
    ).reshape(-1, max_n)

    candidate_norm = norm[reference_clip]
    reference_norm = norm[num_clips:]
    nonzero = (candidate_norm != 0) & (reference_norm != 0)
    similarity = np.where(nonzero, dot / np.where(nonzero, candidate_norm * reference_norm, 1.0), dot)
    delta = bigrams[reference_clip] - bigrams[num_clips:]
    similarity = similarity * np.exp(-(delta**2) / (2 * sigma**2))[:, None]

    # Every clip has ≥ 1 reference and they are adjacent, so per-clip sums are one reduceat.
    summed = np.add.reduceat(similarity, np.flatnonzero(run_starts(reference_clip)), axis=0)
    scores = summed.mean(axis=1) / refs_per_clip * 10.0
    return float(np.mean(scores)), scores
