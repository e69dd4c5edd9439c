"""Caption metrics identical to the COCO caption toolkit (pycocoevalcap 1.2), offline and fast.

    evaluate(candidates, references, metrics=["bleu", "rouge_l", "cider_d"]) -> {"bleu_1": ..., ...}

Captions are first tokenized as the toolkit does (tokenizer.py), all in one batch; every metric
but sbert_sim sees the tokens. BLEU, ROUGE-L and CIDEr-D share one mapping of the tokens to
integer ids, and BLEU and CIDEr-D one n-gram table (ngrams.Captions). One module per metric;
Java metrics (METEOR, SPICE) that cannot run are reported in `Evaluation.errors` (and warned
about by `evaluate`) while the others are still computed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from audiocap.errors import AudiocapError, MetricError, first_few
# Modules, not their functions, so that `audiocap.metrics.spice` etc. stay the modules.
from audiocap.metrics import bleu, cider, meteor, rouge, spice
from audiocap.metrics.meteor import MeteorOptions
from audiocap.metrics.ngrams import Captions
from audiocap.metrics.sbert import sbert_similarity  # its model loads at first use (optional extra)
from audiocap.metrics.spice import SpiceOptions
from audiocap.metrics.tokenizer import tokenize_batch
from audiocap.metrics.vocab import vocabulary_stats

METRICS = ("bleu", "meteor", "rouge_l", "cider_d", "spice", "spider", "sbert_sim", "vocab")
DEFAULT_METRICS = ("bleu", "meteor", "rouge_l", "cider_d")


def score_names(metrics: list[str]) -> list[str]:
    """The keys `evaluate` returns for `metrics` (e.g. what training's best_metric may name)."""
    expand = {"bleu": [f"bleu_{n}" for n in range(1, 5)], "vocab": ["vocab", "distinct_1", "distinct_2"]}
    return [name for metric in metrics for name in expand.get(metric, [metric])]


@dataclass
class Evaluation:
    corpus: dict[str, float] = field(default_factory=dict)  # keys bleu_1..bleu_4, meteor, rouge_l, ...
    per_clip: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed


def score(
    candidates: list[str],
    references: list[list[str]],
    metrics: str | list[str] | tuple[str, ...] = DEFAULT_METRICS,
    meteor_options: MeteorOptions = MeteorOptions(),
    spice_options: SpiceOptions = SpiceOptions(),
) -> Evaluation:
    """Corpus and per-clip scores of one candidate per clip against its references (≥ 1 each).

    `metrics` may also be one string, "bleu" or "bleu,cider_d"."""
    metrics = metric_names(metrics)
    check_captions(candidates, references)
    wanted = set(metrics) | ({"cider_d", "spice"} if "spider" in metrics else set())
    result = Evaluation()
    tokenized = tokenize_batch(candidates + [r for refs in references for r in refs])
    ends = np.cumsum([len(candidates)] + [len(refs) for refs in references]).tolist()
    tokenized, tokenized_refs = tokenized[: ends[0]], [tokenized[a:b] for a, b in zip(ends, ends[1:])]
    empty = sum(not c for c in tokenized)
    if empty:
        warnings.warn(f"{empty} of {len(candidates)} candidates are empty after tokenization; they score 0")

    # The tokenized captions are normalized (single spaces), so splitting them on whitespace (BLEU,
    # CIDEr-D) or on " " (ROUGE-L) gives the same tokens, but for empty captions (see rouge_l_of).
    captions = Captions.of(tokenized, tokenized_refs) if wanted & {"bleu", "rouge_l", "cider_d"} else None
    if "bleu" in wanted:
        bleus = bleu.bleu_of(captions)
        for n, value in enumerate(bleus.corpus, start=1):
            result.corpus[f"bleu_{n}"] = float(value)
            result.per_clip[f"bleu_{n}"] = bleus.per_clip[:, n - 1]
    simple = {"rouge_l": lambda: rouge.rouge_l_of(captions), "cider_d": lambda: cider.cider_d_of(captions),
              "meteor": lambda: meteor.meteor(tokenized, tokenized_refs, meteor_options),
              "spice": lambda: spice.spice(tokenized, tokenized_refs, spice_options)}
    for name in ("meteor", "rouge_l", "cider_d", "spice"):
        if name in wanted:
            try:
                result.corpus[name], result.per_clip[name] = simple[name]()
            except AudiocapError as error:  # e.g. no Java: report it, keep the other metrics
                result.errors[name] = str(error)
    if "spider" in wanted and "spice" in result.corpus:
        result.corpus["spider"] = (result.corpus["cider_d"] + result.corpus["spice"]) / 2
        result.per_clip["spider"] = (result.per_clip["cider_d"] + result.per_clip["spice"]) / 2
    elif "spider" in wanted:
        result.errors["spider"] = "needs SPICE, which was not computed"
    if "sbert_sim" in wanted:
        try:
            result.corpus["sbert_sim"], result.per_clip["sbert_sim"] = sbert_similarity(candidates, references)
        except AudiocapError as error:
            result.errors["sbert_sim"] = str(error)
    if "vocab" in wanted:
        result.corpus.update(vocabulary_stats(tokenized))
    for name in wanted - set(metrics):  # computed only because SPIDEr needs it
        result.corpus.pop(name, None)
    return result


def metric_names(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """The metrics asked for, as a list; a string is one name or a comma-separated list (as on the command
    line), never its letters."""
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    metrics = [m.strip() for m in metrics if m.strip()]
    if not metrics:
        raise MetricError(f"no metrics given; choose from {', '.join(METRICS)}")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise MetricError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    return metrics


def check_captions(candidates: list[str], references: list[list[str]]) -> None:
    """Refuse arguments of the wrong shape before any work: a flat list of strings as `references`
    would otherwise be iterated letter by letter, each letter scored as a reference caption."""
    if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates):
        raise TypeError("candidates must be a list of strings, one caption per clip")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references must be a list with one list of strings per clip; references[{i}] is "
                            f"{refs!r}: write [[\"a dog barks\"]] for one clip with one reference, not [\"a dog barks\"]")
    if len(candidates) != len(references) or not candidates:
        raise MetricError(f"{len(candidates)} candidates for {len(references)} reference sets (need equal, ≥ 1)")
    if empty := [i for i, refs in enumerate(references) if len(refs) == 0]:
        raise MetricError(f"every clip needs at least one reference caption; {len(empty)} clips have none "
                          f"(indices {first_few(empty)})")


def evaluate(
    candidates: list[str],
    references: list[list[str]],
    metrics: str | list[str] | tuple[str, ...] = DEFAULT_METRICS,
    **options,
) -> dict[str, float]:
    """Corpus scores with keys bleu_1..bleu_4, meteor, rouge_l, cider_d, spice, spider, sbert_sim, vocab
    (only those computed); metrics that could not be computed are warned about."""
    result = score(candidates, references, metrics, **options)
    for name, reason in result.errors.items():
        warnings.warn(f"{name} not computed: {reason}")
    return result.corpus
