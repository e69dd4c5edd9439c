"""BLEU, ROUGE-L, CIDEr-D and METEOR of any number of clips in bounded memory: the clips are tokenized and
scored in chunks, with the values of scoring them all at once.

Each chunk of clips is tokenized and turned into token ids (one vocabulary for the corpus). BLEU adds up
its counts over the chunks (bleu.BleuCounts); ROUGE-L scores each clip on its own; METEOR's jar scores
chunk after chunk in a thread of its own (the JVM works while Python tokenizes the next chunk) and sums
its statistics as the jar does (meteor.MeteorScorer). CIDEr-D's document frequencies count every clip's
references, so the chunks' token ids are kept (4 bytes a token) and scored once all are counted
(document_frequency). Besides the captions given, memory holds one chunk's tables, the token ids and
8 bytes per clip and score.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from audiocap.errors import MetricError
from audiocap.metrics import bleu, cider, rouge
from audiocap.metrics.document_frequency import DocumentFrequencies
from audiocap.metrics.meteor import MeteorOptions, MeteorScorer
from audiocap.metrics.ngrams import Captions
from audiocap.metrics.tokenizer import tokenize_batch

CHUNK_CLIPS = 2_000  # clips tokenized and scored at a time (5 references each: ~0.1 GB of n-gram tables)
CHUNKED_METRICS = ("bleu", "meteor", "rouge_l", "cider_d")
METEOR_CHUNKS_AHEAD = 2  # tokenized chunks waiting for the METEOR thread, at most


@dataclass
class ChunkedScores:
    corpus: dict[str, float] = field(default_factory=dict)
    per_clip: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed
    empty: int = 0  # candidates empty after tokenization
    # every caption tokenized, when asked for (the metrics scored elsewhere need them all at once)
    tokenized: list[str] = field(default_factory=list)
    tokenized_references: list[list[str]] = field(default_factory=list)


def score_in_chunks(candidates: list[str], references: list[list[str]], metrics: set[str],
                    meteor_options: MeteorOptions = MeteorOptions(), chunk_clips: int = CHUNK_CLIPS,
                    keep_tokenized: bool = False) -> ChunkedScores:
    """The metrics of CHUNKED_METRICS in `metrics` of candidates (one per clip) against references (≥ 1 per
    clip), `chunk_clips` clips at a time."""
    result, per_clip = ChunkedScores(), {}
    vocabulary, stored, counts = {}, [], None
    meteor = _start_meteor(meteor_options, result.errors) if "meteor" in metrics else None
    try:
        for start in range(0, len(candidates), chunk_clips):
            tokenized, tokenized_refs = _tokenized(candidates[start:start + chunk_clips],
                                                   references[start:start + chunk_clips])
            result.empty += sum(not c for c in tokenized)
            if keep_tokenized:
                result.tokenized += tokenized
                result.tokenized_references += tokenized_refs
            if meteor and not meteor.submit(tokenized, tokenized_refs, result.errors):
                meteor = None
            if not metrics & {"bleu", "rouge_l", "cider_d"}:
                continue
            # The tokenized captions are normalized (single spaces), so splitting them on whitespace (BLEU,
            # CIDEr-D) or on " " (ROUGE-L) gives the same tokens, but for empty captions (see rouge_l_of).
            captions = Captions.of(tokenized, tokenized_refs, vocabulary=vocabulary)
            if "bleu" in metrics:
                bleus = bleu.bleu_of(captions)
                counts = bleus.counts if counts is None else counts + bleus.counts
                per_clip.setdefault("bleu", []).append(bleus.per_clip)
            if "rouge_l" in metrics:
                per_clip.setdefault("rouge_l", []).append(rouge.rouge_l_of(captions)[1])
            if "cider_d" in metrics:
                stored.append(_with_ids_as(captions, np.int32))
        if counts is not None:
            bleus = np.concatenate(per_clip.pop("bleu"))
            result.corpus.update({f"bleu_{n}": float(v) for n, v in enumerate(counts.bleu(), start=1)})
            result.per_clip.update({f"bleu_{n}": bleus[:, n - 1] for n in range(1, len(counts.correct) + 1)})
        if meteor:
            meteor.finish(result)
    finally:
        if meteor:
            meteor.close()
    if stored:
        frequencies = DocumentFrequencies.of(stored)
        per_clip["cider_d"] = [cider.cider_d_of(_with_ids_as(chunk, np.int64), frequencies=frequencies)[1]
                               for chunk in stored]
    for name in ("rouge_l", "cider_d"):
        if name in per_clip:
            result.per_clip[name] = np.concatenate(per_clip[name])
            result.corpus[name] = float(np.mean(result.per_clip[name]))
    return result


def _tokenized(candidates: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    tokenized = tokenize_batch(candidates + [r for refs in references for r in refs])
    ends = np.cumsum([len(candidates)] + [len(refs) for refs in references]).tolist()
    return tokenized[: ends[0]], [tokenized[a:b] for a, b in zip(ends, ends[1:])]


def _with_ids_as(captions: Captions, dtype) -> Captions:
    """The captions with token ids, lengths and reference clips as `dtype`: int32 (4 bytes a token) while a chunk
    waits for the other chunks' document frequencies, int64 (in which the n-gram codes are computed) to score it."""
    return replace(captions, tokens=captions.tokens.astype(dtype), lengths=captions.lengths.astype(dtype),
                   reference_clip=captions.reference_clip.astype(dtype))


def _start_meteor(options: MeteorOptions, errors: dict[str, str]) -> MeteorChunks | None:
    try:
        return MeteorChunks(options)
    except MetricError as error:  # e.g. no Java: the other metrics are still computed
        errors["meteor"] = str(error)
        return None


class MeteorChunks:
    """METEOR of chunk after chunk, in a thread of its own; at most METEOR_CHUNKS_AHEAD chunks wait for it."""

    def __init__(self, options: MeteorOptions):
        self.scorer = MeteorScorer(options)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")
        self.pending = deque()
        self.per_clip: list[np.ndarray] = []

    def submit(self, candidates: list[str], references: list[list[str]], errors: dict[str, str]) -> bool:
        """Queue a chunk; False (and the error in `errors`) if METEOR failed."""
        self.pending.append(self.thread.submit(self.scorer.score, candidates, references))
        return self._collect(METEOR_CHUNKS_AHEAD, errors)

    def finish(self, result: ChunkedScores) -> None:
        if self._collect(0, result.errors):
            try:
                result.corpus["meteor"] = self.scorer.corpus()
                result.per_clip["meteor"] = np.concatenate(self.per_clip)
            except MetricError as error:
                result.errors["meteor"] = str(error)

    def _collect(self, waiting: int, errors: dict[str, str]) -> bool:
        try:
            while len(self.pending) > waiting:
                self.per_clip.append(self.pending.popleft().result())
        except MetricError as error:
            errors["meteor"] = str(error)
            self.close()
            return False
        return True

    def close(self) -> None:
        self.scorer.process.kill()  # a chunk in progress then fails at once, and its thread ends
        self.thread.shutdown(cancel_futures=True)
        self.scorer.close()
