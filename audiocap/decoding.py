"""Caption decoding: batched greedy and beam search over the decoder, with a KV cache.

    memory, memory_mask = model.encode(frames, frame_lengths)
    results = decode(model, memory, memory_mask, tokenizer, DecodingOptions(beam_size=3))
    n_best = decode_n_best(model, memory, memory_mask, tokenizer, DecodingOptions(beam_size=3), n_best=3)

Every step feeds only the newest token: the decoder's self-attention keys/values of earlier tokens and the
cross-attention keys/values of the memory live in a `KVCache` (the latter projected once per clip).
Constraints (length limits, n-gram and word bans) are logit filters applied before the log-softmax, so the
reported log-probabilities are those of the constrained distribution.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from audiocap.model import AudioCaptioner
from audiocap.tokenizer import Tokenizer

# Function words a caption may repeat freely; every other word counts as a content word.
STOPWORDS = frozenset(
    "a an the and or but of in on at to from with without by for as into onto over under up down out off "
    "through then than before after during near behind around across along against between "
    "is are was were be been being has have had do does can it its this that these those there "
    "some someone something somebody each other another several many much more most few very "
    "who which what while when where his her their they he she them him one two three".split()
)

# On a CPU, a step of fewer rows (clips x beams) than this runs on one intra-op thread: it is bound by
# reading the decoder's weights, which one core does about as fast as two, while a second thread adds a
# synchronisation to each of the step's ~100 small operations (beam 3, 1 clip: 41 ms on one thread, 54 on
# two; from 48 rows two threads win: docs/BENCHMARKS.md, "Captioning").
SINGLE_THREAD_MAX_ROWS = 32


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1  # 1 = greedy
    length_penalty: float = 1.0  # beam ranking: log_prob / n_tokens ** length_penalty (0 = raw log-prob)
    min_length: int = 0  # words before <eos> is allowed
    max_length: int | None = None  # words at most; None or more than the model allows -> max_caption_tokens - 1
    no_repeat_ngram_size: int = 0  # 0 = off; n = no word n-gram occurs twice
    ban_repeated_content_words: bool = False  # a non-stopword is generated at most once
    suppress_unk: bool = True  # never generate <unk>

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, not {self.beam_size}")
        if self.min_length < 0 or self.no_repeat_ngram_size < 0:
            raise ValueError("min_length and no_repeat_ngram_size must not be negative")
        if self.max_length is not None and self.max_length < self.min_length:
            raise ValueError(f"max_length={self.max_length} is below min_length={self.min_length}")


@dataclass
class DecodingResult:
    text: str
    tokens: list[int]  # word ids, without <bos>/<eos>
    log_prob: float  # sum of the log-probabilities of the words and the final <eos>

    @property
    def n_tokens(self) -> int:
        """How many log-probabilities `log_prob` sums: the words and the final <eos>."""
        return len(self.tokens) + 1


class LogitFilter:
    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        """Edit logits (N, V) in place given the tokens so far (N, t), <bos> first."""
        raise NotImplementedError


class SuppressTokens(LogitFilter):
    def __init__(self, token_ids: list[int]):
        self.token_ids = torch.tensor(token_ids)  # a tensor index: a Python list is converted on every step

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        logits.index_fill_(1, self.token_ids.to(logits.device), -torch.inf)


class MinimumLength(LogitFilter):
    def __init__(self, eos: int, min_length: int):
        self.eos, self.min_length = eos, min_length

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] - 1 < self.min_length:
            logits[:, self.eos] = -torch.inf


class MaximumLength(LogitFilter):
    """Forces <eos> once `max_length` words exist; the decoders rely on it to terminate."""

    def __init__(self, eos: int, max_length: int):
        self.eos, self.max_length = eos, max_length

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] - 1 >= self.max_length:
            eos_logits = logits[:, self.eos].clone()
            logits.fill_(-torch.inf)
            logits[:, self.eos] = eos_logits


class NoRepeatNGram(LogitFilter):
    """Bans every token that would complete an n-gram already present in the row."""

    def __init__(self, n: int):
        self.n = n

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] < self.n:  # no complete n-gram yet
            return
        ngrams = tokens.unfold(1, self.n, 1)  # (N, W, n)
        prefix = tokens[:, tokens.shape[1] - self.n + 1 :]  # (N, n-1): what the next token would extend
        seen = (ngrams[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (N, W)
        banned = torch.zeros_like(logits).scatter_add_(1, ngrams[:, :, -1], seen.to(logits.dtype)) > 0
        logits.masked_fill_(banned, -torch.inf)


class BanRepeatedContentWords(LogitFilter):
    # A tokenizer's mask is built once: a pass over the whole vocabulary, paid per batch otherwise.
    _masks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, tokenizer: Tokenizer):
        if tokenizer not in self._masks:
            n_special = len(tokenizer.special_ids)
            self._masks[tokenizer] = torch.tensor(
                [i >= n_special and w not in STOPWORDS for i, w in enumerate(tokenizer.itos)])
        self.is_content_word = self._masks[tokenizer]  # (V,) bool

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        generated = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, tokens, True)  # (N, V)
        logits.masked_fill_(generated & self.is_content_word.to(logits.device), -torch.inf)


class GreedyDecoder:
    def __init__(self, model: AudioCaptioner, tokenizer: Tokenizer, logit_filters: list[LogitFilter], max_length: int):
        self.model, self.tokenizer, self.logit_filters, self.max_length = model, tokenizer, logit_filters, max_length

    def run(self, memory: Tensor, memory_mask: Tensor) -> list[list[tuple[list[int], float]]]:
        eos = self.tokenizer.eos
        n_audio = memory.shape[0]
        tokens = torch.full((n_audio, 1), self.tokenizer.bos, device=memory.device)  # (B, t)
        sum_logprobs = torch.zeros(n_audio, device=memory.device)
        finished = torch.zeros(n_audio, dtype=torch.bool, device=memory.device)
        kv_cache = self.model.new_kv_cache()

        for _ in range(self.max_length + 1):  # MaximumLength forces <eos> on the last step
            logits = self.model.decode(tokens[:, -1:], memory, memory_mask, kv_cache)[0][:, -1].float()  # (B, V)
            for logit_filter in self.logit_filters:
                logit_filter.apply(logits, tokens)
            logprobs = F.log_softmax(logits, dim=-1)
            next_tokens = logprobs.argmax(dim=-1).masked_fill(finished, eos)  # finished rows just pad with <eos>
            next_logprobs = logprobs.gather(1, next_tokens[:, None])[:, 0]
            sum_logprobs += torch.where(finished, 0.0, next_logprobs)
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
            finished |= next_tokens == eos
            if finished.all():
                break

        words = [strip_to_words(row, eos) for row in tokens.tolist()]
        return [[hypothesis] for hypothesis in zip(words, sum_logprobs.tolist())]


class BeamSearchDecoder:
    """Keeps `beam_size` unfinished hypotheses per clip; a hypothesis that ends with <eos> among the best
    candidates is set aside, and a clip is done once it has `beam_size` finished ones (whisper's rule).
    Search ranks by summed log-probability; the length penalty only picks the final caption."""

    def __init__(
        self, model: AudioCaptioner, tokenizer: Tokenizer, logit_filters: list[LogitFilter], max_length: int,
        beam_size: int, length_penalty: float,
    ):
        self.model, self.tokenizer, self.logit_filters, self.max_length = model, tokenizer, logit_filters, max_length
        self.beam_size, self.length_penalty = beam_size, length_penalty

    def run(self, memory: Tensor, memory_mask: Tensor) -> list[list[tuple[list[int], float]]]:
        """Per clip, its `beam_size` finished hypotheses (words, summed log-prob), best ranking score first."""
        eos, K, device = self.tokenizer.eos, self.beam_size, memory.device
        n_audio = memory.shape[0]
        # Row i*K + k is beam k of clip i. The memory keeps one row per clip: the decoder lets the K rows of a
        # clip share it (see MultiHeadAttention.forward) rather than projecting and attending to K copies.
        rows = [[self.tokenizer.bos] for _ in range(n_audio * K)]  # each row's tokens so far, <bos> first
        tokens = torch.tensor(rows, device=device)  # (B*K, t)
        # All K beams start as the same <bos>: only the first may expand, or the step-0 candidates would repeat.
        sum_logprobs = torch.full((n_audio, K), -torch.inf, device=device)
        sum_logprobs[:, 0] = 0.0
        finished: list[list[tuple[list[int], float]]] = [[] for _ in range(n_audio)]
        kv_cache = self.model.new_kv_cache()

        for _ in range(self.max_length + 1):  # MaximumLength forces <eos> on the last step
            logits = self.model.decode(tokens[:, -1:], memory, memory_mask, kv_cache)[0][:, -1].float()  # (B*K, V)
            for logit_filter in self.logit_filters:
                logit_filter.apply(logits, tokens)
            logprobs = F.log_softmax(logits, dim=-1)
            n_vocab = logprobs.shape[-1]
            scores = (sum_logprobs[:, :, None] + logprobs.view(n_audio, K, n_vocab)).view(n_audio, K * n_vocab)
            # Each beam has one <eos> candidate, so the best 2K hold at least K that continue.
            top_scores, top_index = scores.topk(2 * K, dim=-1)  # (B, 2K), best first
            # The choice among 2K candidates per clip is a few Python comparisons; as tensor operations it
            # was ~20 small kernels per step, each slow right after the step's weights have passed through.
            source_rows, next_tokens, next_scores = [], [], []
            for i, (clip_scores, clip_index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
                continuing = 0
                for score, index in zip(clip_scores, clip_index):
                    beam, token = divmod(index, n_vocab)
                    if token != eos:
                        if continuing < K:
                            source_rows.append(i * K + beam)
                            next_tokens.append(token)
                            next_scores.append(score)
                            continuing += 1
                    # an ending candidate counts if it beats the K-th continuing one, as in an unbatched search
                    elif continuing < K and math.isfinite(score) and len(finished[i]) < K:
                        finished[i].append((strip_to_words(rows[i * K + beam], eos), score))
            if all(len(hypotheses) >= K for hypotheses in finished):
                break

            rows = [rows[source] + [token] for source, token in zip(source_rows, next_tokens)]
            tokens = torch.tensor(rows, device=device)
            sum_logprobs = torch.tensor(next_scores, device=device).view(n_audio, K)
            if source_rows != list(range(n_audio * K)):
                kv_cache.reorder_beams(torch.tensor(source_rows, device=device))

        # sorted() is stable, so the first of equally ranked hypotheses stays first (as max() would pick it)
        return [sorted(hypotheses, key=self.ranking_score, reverse=True) for hypotheses in finished]

    def ranking_score(self, hypothesis: tuple[list[int], float]) -> float:
        words, log_prob = hypothesis
        return log_prob / (len(words) + 1) ** self.length_penalty  # + 1: the <eos>, whose log-prob is summed


def strip_to_words(row: list[int], eos: int) -> list[int]:
    """<bos> w_1 .. w_n <eos> ... -> [w_1 .. w_n]."""
    words = row[1:]
    return words[: words.index(eos)] if eos in words else words


def build_logit_filters(tokenizer: Tokenizer, options: DecodingOptions, max_length: int) -> list[LogitFilter]:
    suppressed = [tokenizer.pad, tokenizer.bos] + ([tokenizer.unk] if options.suppress_unk else [])
    filters: list[LogitFilter] = [SuppressTokens(suppressed)]
    if options.min_length > 0:
        filters.append(MinimumLength(tokenizer.eos, options.min_length))
    if options.no_repeat_ngram_size > 0:
        filters.append(NoRepeatNGram(options.no_repeat_ngram_size))
    if options.ban_repeated_content_words:
        filters.append(BanRepeatedContentWords(tokenizer))
    filters.append(MaximumLength(tokenizer.eos, max_length))  # last: it overrides every other filter
    return filters


@contextmanager
def decoding_threads(device: torch.device, n_rows: int):
    """One intra-op thread while decoding `n_rows` rows on a CPU, if fewer than SINGLE_THREAD_MAX_ROWS;
    the caller's thread count is restored afterwards, also on an error."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or n_rows >= SINGLE_THREAD_MAX_ROWS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks tensor versions)
def decode(
    model: AudioCaptioner,
    memory: Tensor,  # (B, T, d) from model.encode
    memory_mask: Tensor,  # (B, T) True = valid frame
    tokenizer: Tokenizer,
    options: DecodingOptions = DecodingOptions(),
) -> list[DecodingResult]:
    """One caption per clip. Put the model in eval mode first (dropout would make decoding random)."""
    return [results[0] for results in decode_n_best(model, memory, memory_mask, tokenizer, options, n_best=1)]


@torch.inference_mode()
def decode_n_best(
    model: AudioCaptioner, memory: Tensor, memory_mask: Tensor, tokenizer: Tokenizer,
    options: DecodingOptions = DecodingOptions(), n_best: int = 1,
) -> list[list[DecodingResult]]:
    """Per clip, the `n_best` (at most `options.beam_size`) finished beams, best ranking score first: the
    first is the caption `decode` gives. They are distinct token sequences."""
    if not 1 <= n_best <= options.beam_size:
        raise ValueError(f"n_best must be from 1 to the beam size ({options.beam_size}), not {n_best}")
    model_limit = model.dims.max_caption_tokens - 1  # <bos> takes one of the decoder's positions
    max_length = model_limit if options.max_length is None else min(options.max_length, model_limit)
    logit_filters = build_logit_filters(tokenizer, options, max_length)
    if options.beam_size == 1:
        decoder = GreedyDecoder(model, tokenizer, logit_filters, max_length)
    else:
        decoder = BeamSearchDecoder(model, tokenizer, logit_filters, max_length, options.beam_size, options.length_penalty)
    with decoding_threads(memory.device, memory.shape[0] * options.beam_size):
        hypotheses = decoder.run(memory, memory_mask)
    return [
        [DecodingResult(text=tokenizer.decode(words), tokens=words, log_prob=log_prob)
         for words, log_prob in clip_hypotheses[:n_best]]
        for clip_hypotheses in hypotheses
    ]
