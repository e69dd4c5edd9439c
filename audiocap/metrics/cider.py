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

import math

import numpy as np

from audiocap.metrics.ngrams import NgramTable, count_ngrams, lookup, unique

SIGMA = 6.0


def cider_d(
    candidates: list[str], references: list[list[str]], sigma: float = SIGMA, table: NgramTable | None = None
) -> tuple[float, np.ndarray]:
    """(mean CIDEr-D, per-clip CIDEr-D) of tokenized candidates against tokenized references.

    `table` may hold the 1..4-gram counts of `candidates + flattened references`, shared with BLEU.
    """
    max_n = 4
    num_clips = len(candidates)
    refs_per_clip = np.array([len(r) for r in references], dtype=np.int64)
    reference_clip = np.repeat(np.arange(num_clips, dtype=np.int64), refs_per_clip)
    table = table if table is not None else count_ngrams(candidates + [r for refs in references for r in refs], max_n)
    is_reference = table.caption >= num_clips

    # Document frequency: in how many clips' reference sets each n-gram occurs.
    clip_gram = unique(reference_clip[table.caption[is_reference] - num_clips] * table.num_grams + table.gram[is_reference])
    document_frequency = np.bincount(clip_gram % table.num_grams, minlength=table.num_grams)
    log_num_clips = np.log(float(num_clips))
    weight = table.count * (log_num_clips - np.log(np.maximum(1.0, document_frequency[table.gram])))

    num_captions = len(table.lengths)
    slot = table.caption * max_n + table.order - 1
    norm = np.sqrt(np.bincount(slot, weights=weight**2, minlength=num_captions * max_n)).reshape(-1, max_n)
    bigrams = np.bincount(table.caption, weights=(table.order == 2) * table.count, minlength=num_captions)

    # Clipped dot product over the n-grams each reference shares with its clip's candidate.
    candidate_rows = ~is_reference
    candidate_key = table.caption[candidate_rows] * table.num_grams + table.gram[candidate_rows]
    order = np.argsort(candidate_key)
    ref_caption = table.caption[is_reference]
    ref_weight = weight[is_reference]
    candidate_weight = lookup(
        candidate_key[order], weight[candidate_rows][order],
        reference_clip[ref_caption - num_clips] * table.num_grams + table.gram[is_reference],
    )
    dot = np.bincount(
        (ref_caption - num_clips) * max_n + table.order[is_reference] - 1,
        weights=np.minimum(candidate_weight, ref_weight) * ref_weight,
        minlength=len(reference_clip) * max_n,
    ).reshape(-1, max_n)

    candidate_norm = norm[reference_clip]
    reference_norm = norm[num_clips:]
    nonzero = (candidate_norm != 0) & (reference_norm != 0)
    similarity = np.where(nonzero, dot / np.where(nonzero, candidate_norm * reference_norm, 1.0), dot)
    delta = bigrams[reference_clip] - bigrams[num_clips:]
    penalty = np.array([math.e ** (-(d**2) / (2 * sigma**2)) for d in delta])
    similarity = similarity * penalty[:, None]

    summed = np.zeros((num_clips, max_n))
    np.add.at(summed, reference_clip, similarity)
    scores = summed.mean(axis=1) / refs_per_clip * 10.0
    return float(np.mean(scores)), scores
