"""FENSE (Zhou et al., ICASSP 2022) and SPIDEr-FL (DCASE 2023) as aac-metrics 0.6.0 combines them.

Both take a per-clip score (sbert_sim for FENSE, SPIDEr for SPIDEr-FL) and multiply it by 1 - 0.9 for
each clip whose candidate the fluency-error detector flags (fer.py); the corpus score is the mean.
"""
from __future__ import annotations

import numpy as np

FLUENCY_PENALTY = 0.9  # a caption with a fluency error keeps 10 % of its score


def penalized(scores: np.ndarray, fluency_errors: np.ndarray, penalty: float = FLUENCY_PENALTY) -> np.ndarray:
    """FENSE from sbert_sim, SPIDEr-FL from SPIDEr: each clip's score times (1 - penalty * its error flag)."""
    return scores * (1.0 - penalty * fluency_errors)
