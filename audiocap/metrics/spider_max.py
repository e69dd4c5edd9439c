"""SPIDEr-max (Labbé et al., DCASE 2022 workshop), as aac-metrics 0.6.0 computes it.

SPIDEr-max scores K candidates per clip (e.g. the K best beams) and keeps, per clip, the one with the
highest SPIDEr; `cider_d_max` and `spice_max` are that candidate's CIDEr-D and SPICE (not their own
maxima). Ties go to the first candidate, as torch.argmax breaks them.
"""
from __future__ import annotations

import numpy as np

from audiocap.errors import MetricError
from audiocap.metrics import cider, spice
from audiocap.metrics.ngrams import Captions
from audiocap.metrics.spice import SpiceOptions

def spider_max(tokenized_n_best: list[list[str]], tokenized_references: list[list[str]],
               spice_options: SpiceOptions = SpiceOptions()) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(corpus, per-clip) `spider_max`, `cider_d_max`, `spice_max` of tokenized candidates, K per clip."""
    counts = {len(candidates) for candidates in tokenized_n_best}
    if len(counts) != 1:
        raise MetricError(f"SPIDEr-max needs the same number of candidates for every clip (found {sorted(counts)})")
    k = counts.pop()
    rounds = [[candidates[i] for candidates in tokenized_n_best] for i in range(k)]
    # CIDEr-D's document frequencies come from the references only, so each round is scored on its own.
    cider_d = np.stack([cider.cider_d_of(Captions.of(round_, tokenized_references))[1] for round_ in rounds])
    # SPICE scores each clip on its own: all rounds go through one run of the jar.
    _, flat_spice = spice.spice([c for round_ in rounds for c in round_], tokenized_references * k, spice_options)
    spice_scores = flat_spice.reshape(k, len(tokenized_references))
    spider = (cider_d + spice_scores) / 2
    best = np.argmax(spider, axis=0)[None]
    per_clip = {f"{name}_max": np.take_along_axis(values, best, axis=0)[0]
                for name, values in (("cider_d", cider_d), ("spice", spice_scores), ("spider", spider))}
    return {name: float(values.mean()) for name, values in per_clip.items()}, per_clip
