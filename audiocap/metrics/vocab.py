"""Diversity of the candidates: vocabulary size and distinct-n (Li et al., 2016), on COCO tokens."""
from __future__ import annotations


def vocabulary_stats(tokenized_candidates: list[str]) -> dict[str, float]:
    """`vocab` (distinct words used) and `distinct_1`, `distinct_2` (distinct / total n-grams)."""
    token_lists = [c.split() for c in tokenized_candidates]
    stats: dict[str, float] = {"vocab": len({t for tokens in token_lists for t in tokens})}
    for n in (1, 2):
        grams = [tuple(tokens[i : i + n]) for tokens in token_lists for i in range(len(tokens) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    return stats
