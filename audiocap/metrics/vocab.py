"""Diversity of the candidates, on COCO tokens: aac-metrics 0.6.0's `vocab.*` statistics (the DCASE 2024
set reports them) as `vocab`, and distinct-n (Li et al., 2016) as `distinct`."""
from __future__ import annotations

import numpy as np
import torch

VOCAB_SEED = 1234  # aac-metrics' default: which reference each of its draws leaves out


def distinct_stats(tokenized_candidates: list[str]) -> dict[str, float]:
    """`distinct_1`, `distinct_2`: distinct / total n-grams over all candidates."""
    token_lists = [c.split() for c in tokenized_candidates]
    stats: dict[str, float] = {}
    for n in (1, 2):
        grams = [tuple(tokens[i : i + n]) for tokens in token_lists for i in range(len(tokens) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    return stats


def aac_vocab_stats(tokenized_candidates: list[str], tokenized_references: list[list[str]]):
    """(corpus, per-clip) as aac-metrics' `vocab`: vocabulary sizes of the candidates and references, their
    ratios, the candidates' vocabulary precision/recall/F1/Jaccard against the references', and the mean
    vocabulary of one reference per clip over max(#refs) seeded random draws (`vocab.mrefs_avg`)."""
    candidates = [c.split() for c in tokenized_candidates]
    references = [[r.split() for r in refs] for refs in tokenized_references]
    candidate_vocab = {t for tokens in candidates for t in tokens}
    reference_vocab = {t for refs in references for tokens in refs for t in tokens}
    common = len(candidate_vocab & reference_vocab)
    precision = common / len(candidate_vocab) if candidate_vocab else float("nan")
    recall = common / len(reference_vocab)
    generator = torch.Generator().manual_seed(VOCAB_SEED)
    drawn_sizes = []
    for _ in range(max(len(refs) for refs in references)):
        # one draw per clip, in clip order, exactly as aac-metrics consumes its generator
        drawn = [refs[int(torch.randint(0, len(refs), (), generator=generator))] for refs in references]
        drawn_sizes.append(len({t for tokens in drawn for t in tokens}))
    mrefs_avg = float(np.mean(drawn_sizes))
    corpus = {
        "vocab.cands": float(len(candidate_vocab)),
        "vocab.mrefs_full": float(len(reference_vocab)),
        "vocab.ratio_full": len(candidate_vocab) / len(reference_vocab),
        "vocab.mrefs_avg": mrefs_avg,
        "vocab.ratio_avg": len(candidate_vocab) / mrefs_avg,
        "vocab.precision": precision,
        "vocab.recall": recall,
        "vocab.f1": 2 * precision * recall / (precision + recall) if common else 0.0,
        "vocab.jaccard": common / len(candidate_vocab | reference_vocab),
    }
    return corpus, {"vocab.cands": np.array([len(set(tokens)) for tokens in candidates], dtype=np.float64)}
