"""One evaluation's captions as integer arrays: token ids (shared by BLEU, ROUGE-L and CIDEr-D)
and n-gram counts (shared by BLEU and CIDEr-D), each computed once, when first needed.

The reference toolkit counts n-grams in Python dictionaries, one caption at a time; we give
every distinct n-gram an integer id and keep one row per (caption, n-gram), so that clipping,
document frequencies and cosine similarities become passes over sorted arrays.

Counting is one sort per n: each n-gram occurrence becomes one integer, its n-gram's code times
the number of tokens plus its position, so that equal n-grams are adjacent, caption after caption.
Sorting plain integers is several times faster than `np.unique` or `argsort` on the same number of keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat

import numpy as np

INT64_LIMIT = 2**63


@dataclass(frozen=True)
class NgramTable:
    """One row per distinct n-gram of each caption (n = 1..max_n).

    Rows are sorted by n-gram id, then caption; ids are dense and increase with n, so the rows of
    one n are contiguous. Consumers rely on this order to group rows without sorting again.
    """

    caption: np.ndarray  # (E,) int64 index of the caption
    gram: np.ndarray  # (E,) int64 id of the n-gram, equal ids = equal n-grams
    order: np.ndarray  # (E,) int64 n, the n-gram's length
    count: np.ndarray  # (E,) int64 occurrences in that caption
    position: np.ndarray  # (E,) int64 where its first occurrence starts in the token array
    lengths: np.ndarray  # (C,) int64 tokens per caption
    num_grams: int


def _compact(codes: np.ndarray) -> np.ndarray:
    """Codes renumbered 1..k, equal iff they were equal (to keep later arithmetic within int64)."""
    return np.unique(codes, return_inverse=True)[1].reshape(-1).astype(np.int64) + 1


def token_ids(captions: list[str], separator: str | None = None,
              vocabulary: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids of all tokens, caption after caption; tokens per caption) of captions split on
    `separator` (as `str.split` does). Ids start at 1, in order of first occurrence; words new to
    `vocabulary` (if given: shared by several calls, e.g. the chunks of one corpus) are added to it."""
    vocabulary = {} if vocabulary is None else vocabulary
    token_lists = list(map(str.split, captions, repeat(separator, len(captions))))
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(captions))
    words = list(chain.from_iterable(token_lists))
    new = [word for word in dict.fromkeys(words) if word not in vocabulary]
    vocabulary.update(zip(new, range(len(vocabulary) + 1, len(vocabulary) + len(new) + 1)))
    return np.fromiter(map(vocabulary.__getitem__, words), dtype=np.int64, count=len(words)), lengths


def count_ngrams(tokens: np.ndarray, lengths: np.ndarray, max_n: int = 4) -> NgramTable:
    """Count the 1..max_n-grams of captions given as token ids (≥ 1) and tokens per caption."""
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    end = np.cumsum(lengths)[owner] if len(tokens) else owner
    base, num_positions = int(tokens.max(initial=0)) + 1, max(len(tokens), 1)

    # codes[i] identifies tokens[i:i+n]: the n tokens' ids as digits in base `base` (ids start
    # at 1, so no two n-grams of one n share a code). Positions whose n-gram would cross into
    # the next caption get meaningless codes and are left out.
    codes = tokens
    columns = {"caption": [], "gram": [], "order": [], "count": [], "position": []}
    num_grams = 0
    for n in range(1, max_n + 1):
        if n > 1:
            # Keep code * num_positions + position (below) within int64.
            if (int(codes.max(initial=0)) + 1) * base * num_positions >= INT64_LIMIT:
                codes = _compact(codes)
            codes = codes[:-1] * base + tokens[n - 1:]
        starts = np.flatnonzero(np.arange(len(codes)) + n <= end[: len(codes)])
        code, position = np.divmod(np.sort(codes[starts] * num_positions + starts), num_positions)
        caption = owner[position]
        # positions of one caption are consecutive, so each (n-gram, caption) is one run, first occurrence first
        first = np.flatnonzero(run_starts(code) | run_starts(caption))
        new_gram = run_starts(code[first])
        gram = num_grams + np.cumsum(new_gram) - 1
        num_grams += int(new_gram.sum())
        columns["caption"].append(caption[first])
        columns["gram"].append(gram)
        columns["order"].append(np.full(len(gram), n, dtype=np.int64))
        columns["count"].append(np.diff(np.r_[first, len(code)]))
        columns["position"].append(position[first])
    return NgramTable(**{name: np.concatenate(parts) for name, parts in columns.items()},
                      lengths=lengths, num_grams=num_grams)


@dataclass(frozen=True)
class Captions:
    """Tokenized candidates (one per clip) and references (≥ 1 per clip) as token ids.

    Captions 0..clips-1 are the candidates; the references follow, clip after clip. The n-gram
    table and its reference groups are computed on first use, so that BLEU and CIDEr-D share them.
    """

    tokens: np.ndarray  # (T,) ids ≥ 1 of all tokens, caption after caption
    lengths: np.ndarray  # (C,) tokens per caption
    reference_clip: np.ndarray  # (C - clips,) clip of each reference, non-decreasing
    max_n: int = 4  # longest n-gram counted

    @classmethod
    def of(cls, candidates: list[str], references: list[list[str]], separator: str | None = None,
           max_n: int = 4, vocabulary: dict[str, int] | None = None) -> Captions:
        """Captions split into tokens on `separator` (as `str.split` does); `vocabulary`: see token_ids."""
        tokens, lengths = token_ids(candidates + [r for refs in references for r in refs], separator, vocabulary)
        reference_clip = np.repeat(np.arange(len(candidates), dtype=np.int64), [len(refs) for refs in references])
        return cls(tokens, lengths, reference_clip, max_n)

    @property
    def num_clips(self) -> int:
        return len(self.lengths) - len(self.reference_clip)

    @cached_property
    def ngrams(self) -> NgramTable:
        return count_ngrams(self.tokens, self.lengths, self.max_n)

    @cached_property
    def reference_groups(self) -> ReferenceGroups:
        return group_references(self.ngrams, self.reference_clip)


@dataclass(frozen=True)
class ReferenceGroups:
    """The references' rows of an NgramTable grouped by (n-gram, clip), matched to candidates.

    Captions 0..clips-1 of the table are the candidates, one per clip; the others are references.
    """

    is_reference: np.ndarray  # (E,) bool, whether the row is a reference's
    group: np.ndarray  # (R,) group of each reference row; groups are numbered in row order
    starts: np.ndarray  # (G,) first reference row of each group
    candidate_group: np.ndarray  # (E - R,) group of the candidate row's n-gram and clip, -1 if none


def group_references(table: NgramTable, reference_clip: np.ndarray) -> ReferenceGroups:
    """Group the reference rows of `table`; reference r (caption clips + r) belongs to clip reference_clip[r]."""
    num_clips = len(table.lengths) - len(reference_clip)
    is_reference = table.caption >= num_clips
    # Rows are sorted by n-gram, then caption, and references are numbered clip after clip,
    # so these keys come out sorted: equal ones are adjacent, and candidates find theirs by bisection.
    key = table.gram[is_reference] * num_clips + reference_clip[table.caption[is_reference] - num_clips]
    new = run_starts(key)
    starts = np.flatnonzero(new)
    group_key = np.append(key[starts], INT64_LIMIT - 1)  # a sentinel no candidate has, so bisection stays in range
    candidate_key = table.gram[~is_reference] * num_clips + table.caption[~is_reference]
    found = np.searchsorted(group_key, candidate_key)
    return ReferenceGroups(
        is_reference=is_reference, group=np.cumsum(new) - 1, starts=starts,
        candidate_group=np.where(group_key[found] == candidate_key, found, -1),
    )


def run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean mask of the positions where a run of equal values begins in a sorted array."""
    starts = np.ones(len(sorted_values), dtype=bool)
    starts[1:] = sorted_values[1:] != sorted_values[:-1]
    return starts
