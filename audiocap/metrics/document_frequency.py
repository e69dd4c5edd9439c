"""CIDEr-D's document frequencies over a corpus held in chunks: in how many clips' reference sets each
n-gram (n = 1..4) occurs.

The chunks share one vocabulary (ngrams.token_ids), so a token id means the same word in every chunk.
An n-gram is known across chunks by an integer key: a unigram by its token id, a bigram by
`first * base + second`, a trigram by `rank(first two tokens) * base + third` and a 4-gram by
`rank(first two) * R + rank(last two)`, where rank is the index of a bigram among the R distinct
bigrams of the references. A trigram or 4-gram made of bigrams no reference holds is in no reference
either: its key is -1. The keys stay below R · max(base, R) whatever the vocabulary (n tokens as
digits in base `base` overflow int64 from about 55,000 words).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audiocap.errors import MetricError
from audiocap.metrics.ngrams import INT64_LIMIT, Captions, run_starts

MAX_N = 4


@dataclass(frozen=True)
class DocumentFrequencies:
    keys: list[np.ndarray]  # keys[n - 1]: the distinct keys of the references' n-grams, sorted
    clips: list[np.ndarray]  # clips[n - 1][i]: in how many clips' references the n-gram keys[n - 1][i] occurs
    base: int  # above every token id
    num_clips: int

    @classmethod
    def of(cls, chunks: list[Captions]) -> DocumentFrequencies:
        """The document frequencies of the clips of all `chunks` (token ids from one vocabulary)."""
        max_n = max(chunk.max_n for chunk in chunks)
        if max_n > MAX_N:
            raise MetricError(f"CIDEr-D's document frequencies are counted for n-grams up to n = {MAX_N}, not {max_n}")
        base = max(int(chunk.tokens.max(initial=0)) for chunk in chunks) + 1
        frequencies = cls([], [], base, sum(chunk.num_clips for chunk in chunks))
        for n in range(1, max_n + 1):  # the keys of n = 3, 4 need the bigrams' ranks: all of them first
            counts = SortedCounts()
            for chunk in chunks:
                counts.add(*frequencies._reference_counts(chunk, n))
            keys, clips = counts.result()
            frequencies.keys.append(keys)
            frequencies.clips.append(clips)
            if n == 2 and len(keys) * max(base, len(keys)) >= INT64_LIMIT:
                raise MetricError(f"CIDEr-D: {len(keys)} distinct reference bigrams are too many to number")
        return frequencies

    def ngram_keys(self, tokens: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
        """Keys of the n-grams tokens[s:s + n] for s in `starts` (see the module's docstring)."""
        if n == 1:
            return tokens[starts].astype(np.int64)
        if n == 2:
            return tokens[starts].astype(np.int64) * self.base + tokens[starts + 1]
        first = self.rank(self.ngram_keys(tokens, starts, 2), 2)
        if n == 3:
            last, size = tokens[starts + 2], self.base
        else:
            last, size = self.rank(self.ngram_keys(tokens, starts + 2, 2), 2), len(self.keys[1])
        return np.where((first >= 0) & (last >= 0), first * size + last, -1)

    def rank(self, keys: np.ndarray, n: int) -> np.ndarray:
        """The index of each key among the references' n-gram keys, -1 for keys no reference has."""
        table = self.keys[n - 1]
        if not len(table):
            return np.full(len(keys), -1, dtype=np.int64)
        found = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[found] == keys, found, -1)

    def of_grams(self, captions: Captions) -> np.ndarray:
        """Document frequency of each n-gram id of `captions.ngrams` (0 for n-grams in no reference)."""
        table = captions.ngrams
        first = np.flatnonzero(run_starts(table.gram))  # one row of each n-gram id, ids in increasing order
        frequency = np.zeros(len(first), dtype=np.int64)
        for n in range(1, captions.max_n + 1):
            rows = first[table.order[first] == n]
            found = self.rank(self.ngram_keys(captions.tokens, table.position[rows], n), n)
            frequency[table.gram[rows]] = np.append(self.clips[n - 1], 0)[found]  # found = -1: the appended 0
        return frequency

    def _reference_counts(self, chunk: Captions, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(distinct keys of the chunk's reference n-grams, in how many of the chunk's clips each occurs)."""
        num_clips = chunk.num_clips
        lengths = chunk.lengths[num_clips:]
        offset = int(chunk.lengths[:num_clips].sum())
        owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        position = np.arange(len(owner), dtype=np.int64)
        end = np.cumsum(lengths)[owner] if len(owner) else owner
        starts = position[position + n <= end]
        keys = self.ngram_keys(chunk.tokens, offset + starts, n)
        clips = chunk.reference_clip[owner[starts]]
        if int(keys.max(initial=0)) < INT64_LIMIT // max(num_clips, 1):
            pairs = np.unique(keys * num_clips + clips)  # (key, clip), each once
            keys = pairs // num_clips
        else:
            order = np.lexsort((clips, keys))
            keys, clips = keys[order], clips[order]
            keys = keys[run_starts(keys) | run_starts(clips)]
        starts = np.flatnonzero(run_starts(keys))
        return keys[starts], np.diff(np.r_[starts, len(keys)])


class SortedCounts:
    """Counts of integer keys added in parts: (sorted distinct keys, summed counts). Parts are merged
    once they outgrow what is merged, so that memory stays near the distinct keys' and each key is sorted
    O(log parts) times."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.parts.append((keys, counts))
        if sum(len(k) for k, _ in self.parts[1:]) > len(self.parts[0][0]):
            self.parts = [self.result()]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if len(self.parts) == 1:
            return self.parts[0]
        keys, inverse = np.unique(np.concatenate([k for k, _ in self.parts]), return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=np.concatenate([c for _, c in self.parts]),
                             minlength=len(keys))
        return keys, counts.astype(np.int64)
