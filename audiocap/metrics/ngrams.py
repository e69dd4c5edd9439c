"""N-gram counts of many captions at once, as flat numpy arrays shared by BLEU and CIDEr-D.

The reference toolkit counts n-grams in Python dictionaries, one caption at a time; we give
every distinct n-gram an integer id and keep one row per (caption, n-gram), so that clipping,
document frequencies and cosine similarities become sorted-array look-ups.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np


@dataclass(frozen=True)
class NgramTable:
    """One row per distinct n-gram of each caption (n = 1..max_n)."""

    caption: np.ndarray  # (E,) int64 index of the caption
    gram: np.ndarray  # (E,) int64 id of the n-gram, equal ids = equal n-grams
    order: np.ndarray  # (E,) int64 n, the n-gram's length
    count: np.ndarray  # (E,) int64 occurrences in that caption
    lengths: np.ndarray  # (C,) int64 tokens per caption
    num_grams: int


def count_ngrams(captions: list[str], max_n: int = 4) -> NgramTable:
    """Count the 1..max_n-grams of whitespace-tokenized captions (split as `str.split()` does)."""
    token_lists = list(map(str.split, captions))
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(captions))
    words = list(chain.from_iterable(token_lists))
    # ids in order of first occurrence (not set order), so that sums run in a reproducible order
    vocabulary = {word: i for i, word in enumerate(dict.fromkeys(words), start=1)}
    tokens = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.int64, count=len(words))
    owner = np.repeat(np.arange(len(captions), dtype=np.int64), lengths)
    end = np.cumsum(lengths)[owner] if len(tokens) else owner
    base = len(vocabulary) + 1

    # An n-gram's key is its token ids as digits in base `base`; ids start at 1, so keys of
    # different lengths never collide. Fall back to row-wise unique when int64 would overflow.
    rows_caption, rows_key, rows_order = [], [], []
    for n in range(1, max_n + 1):
        starts = np.flatnonzero(np.arange(len(tokens)) + n <= end)
        window = np.stack([tokens[starts + k] for k in range(n)], axis=1)
        if base ** max_n < 2**62:
            key = window @ (base ** np.arange(n - 1, -1, -1, dtype=np.int64))
        else:
            padded = np.zeros((len(starts), max_n), dtype=np.int64)
            padded[:, :n] = window
            key = np.unique(padded, axis=0, return_inverse=True)[1].reshape(-1) * max_n + n
        rows_caption.append(owner[starts])
        rows_key.append(key)
        rows_order.append(np.full(len(starts), n, dtype=np.int64))
    caption = np.concatenate(rows_caption)
    key = np.concatenate(rows_key)
    order = np.concatenate(rows_order)

    gram_of_key, gram = np.unique(key, return_inverse=True)
    gram = gram.reshape(-1)
    pair = caption * len(gram_of_key) + gram
    unique_pair, first, count = np.unique(pair, return_index=True, return_counts=True)
    return NgramTable(
        caption=unique_pair // len(gram_of_key),
        gram=unique_pair % len(gram_of_key),
        order=order[first],
        count=count,
        lengths=lengths,
        num_grams=len(gram_of_key),
    )


def lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where keys[i] == query (keys sorted and unique), 0 where the query is absent."""
    if len(keys) == 0:
        return np.zeros(len(queries), dtype=values.dtype)
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[index] == queries, values[index], 0)


def unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (by sorting, which beats np.unique's hashing on int64 keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
