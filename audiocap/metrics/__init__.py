"""Caption metrics identical to the COCO caption toolkit (pycocoevalcap 1.2), offline and fast.

    evaluate(candidates, references, metrics=["bleu", "rouge_l", "cider_d"]) -> {"bleu_1": ..., ...}

Captions are first tokenized as the toolkit does (tokenizer.py); every metric but minilm_sim sees the
tokens (FER, sbert_sim and FENSE too, as aac-metrics' `evaluate` gives them PTB-tokenized captions).
BLEU, METEOR, ROUGE-L and CIDEr-D tokenize and score chunks of clips (corpus.py), so that a million
clips fit in memory; in each chunk they share one mapping of the tokens to integer ids, and BLEU and
CIDEr-D one n-gram table (ngrams.Captions). One module per metric; composite metrics (SPIDEr,
SPIDEr-FL, FENSE) report their components too and take aac-metrics' names, presets are aac-metrics'
sets. A metric that cannot run (no Java, a model not downloaded) is reported in `Evaluation.errors`
(and warned about by `evaluate`) while the others are still computed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiocap.errors import AudiocapError, MetricError, first_few
# Modules, not their functions, so that `audiocap.metrics.spice` etc. stay the modules.
from audiocap.metrics import fense_models, spice
from audiocap.metrics.corpus import CHUNK_CLIPS, CHUNKED_METRICS, score_in_chunks
from audiocap.metrics.fense import penalized
from audiocap.metrics.meteor import MeteorOptions
from audiocap.metrics.spice import SpiceOptions
from audiocap.metrics.spider_max import spider_max
from audiocap.metrics.tokenizer import tokenize_batch

METRICS = ("bleu", "meteor", "rouge_l", "cider_d", "spice", "spider", "spider_fl", "spider_max", "fer",
           "sbert_sim", "fense", "minilm_sim", "vocab", "distinct")
DEFAULT_METRICS = ("bleu", "meteor", "rouge_l", "cider_d")
# aac-metrics 0.6.0's sets of these names (its METRICS_SETS)
PRESETS = {"dcase2023": ("meteor", "spider_fl"), "dcase2024": ("meteor", "spider_fl", "fense", "vocab")}
# A composite metric reports its components too, as aac-metrics does (spider_fl: cider_d, spice, spider, fer).
COMPONENTS = {"spider": ("cider_d", "spice"), "spider_fl": ("cider_d", "spice", "spider", "fer"),
              "fense": ("sbert_sim", "fer")}
# The model behind each metric, for `score --help` and the README.
MODELS = {"meteor": "METEOR 1.5 jar (Java)", "spice": "SPICE 1.0 + Stanford CoreNLP 3.6.0 (Java)",
          "fer": "FENSE error detector echecker_clotho_audiocaps_base (bert-base-uncased)",
          "sbert_sim": "sentence-transformers/paraphrase-TinyBERT-L6-v2",
          "minilm_sim": "sentence-transformers/all-MiniLM-L6-v2",
          "fense": "sbert_sim's and fer's models", "spider_fl": "SPICE's and fer's models"}


def score_names(metrics: list[str]) -> list[str]:
    """The keys `evaluate` returns for `metrics` (e.g. what training's best_metric may name)."""
    expand = {"bleu": [f"bleu_{n}" for n in range(1, 5)], "distinct": ["distinct_1", "distinct_2"],
              "vocab": [f"vocab.{name}" for name in ("cands", "mrefs_full", "ratio_full", "mrefs_avg", "ratio_avg",
                                                     "precision", "recall", "f1", "jaccard")],
              "spider_max": ["spider_max", "cider_d_max", "spice_max"]}
    names = [name for metric in with_components(metrics) for name in expand.get(metric, [metric])]
    return list(dict.fromkeys(names))


def with_components(metrics: list[str]) -> list[str]:
    return list(dict.fromkeys(c for m in metrics for c in (*COMPONENTS.get(m, ()), m)))


@dataclass
class Evaluation:
    corpus: dict[str, float] = field(default_factory=dict)  # keys bleu_1..bleu_4, meteor, rouge_l, ...
    per_clip: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # metric -> why it was not computed

    def add(self, name: str, compute) -> None:
        """Run `compute() -> (corpus dict, per-clip dict)`; a metric that cannot run is reported, not raised."""
        try:
            corpus, per_clip = compute()
        except AudiocapError as error:  # e.g. no Java or a missing model: keep the other metrics
            self.errors[name] = str(error)
            return
        self.corpus.update(corpus)
        self.per_clip.update(per_clip)

    def combine(self, name: str, parts: tuple[str, str], function) -> None:
        """A per-clip combination of two metrics already computed, averaged over the clips."""
        if missing := [p for p in parts if p not in self.per_clip]:
            self.errors[name] = f"needs {' and '.join(missing)}, which could not be computed"
            return
        self.per_clip[name] = function(*(self.per_clip[p] for p in parts))
        self.corpus[name] = float(self.per_clip[name].mean())


def score(
    candidates: list[str],
    references: list[list[str]],
    metrics: str | list[str] | tuple[str, ...] = DEFAULT_METRICS,
    meteor_options: MeteorOptions = MeteorOptions(),
    spice_options: SpiceOptions = SpiceOptions(),
    metrics_cache: Path | None = None,
    n_best: list[list[str]] | None = None,
    chunk_clips: int = CHUNK_CLIPS,
) -> Evaluation:
    """Corpus and per-clip scores of one candidate per clip against its references (≥ 1 each).

    `metrics` may also be one string, "bleu", "bleu,cider_d" or a preset ("dcase2024"). FER, sbert_sim and
    FENSE read their models from `metrics_cache` (fense_models.metrics_cache). `n_best[i]` holds clip i's K
    candidates for spider_max (the same K for every clip). BLEU, METEOR, ROUGE-L and CIDEr-D tokenize and
    score `chunk_clips` clips at a time (corpus.py): their memory does not grow with the captions'."""
    metrics = metric_names(metrics)
    check_captions(candidates, references)
    if "spider_max" in metrics and not n_best:
        raise MetricError("spider_max needs several candidates per clip (caption_predicted_1..K columns)")
    wanted = set(with_components(metrics))
    n_best = n_best if "spider_max" in wanted else []
    k = len(n_best[0]) if n_best else 1
    # spice, fer, sbert_sim, vocab, distinct and spider_max need every tokenized caption at once
    chunked = score_in_chunks(candidates, references, wanted & set(CHUNKED_METRICS), meteor_options, chunk_clips,
                              keep_tokenized=bool(wanted - set(CHUNKED_METRICS) - {"minilm_sim"}))
    tokenized, tokenized_refs = chunked.tokenized, chunked.tokenized_references
    flat_n_best = tokenize_batch([c for cs in n_best for c in cs])
    tokenized_n_best = [flat_n_best[i:i + k] for i in range(0, len(flat_n_best), k)]
    if chunked.empty:
        warnings.warn(f"{chunked.empty} of {len(candidates)} candidates are empty after tokenization; they score 0")

    result = Evaluation(corpus=chunked.corpus, per_clip=chunked.per_clip, errors=chunked.errors)
    cache = fense_models.metrics_cache(metrics_cache)
    for name, compute in _one_score_metrics(wanted, tokenized, tokenized_refs, candidates, references, spice_options,
                                            cache):
        result.add(name, lambda: _named(name, *compute()))
    if "fer" in wanted:
        # fer, sbert_sim, minilm_sim and vocab import PyTorch: only when asked for (`audiocap score --help`
        # and `audiocap download` must not load it)
        from audiocap.metrics import fer

        result.add("fer", lambda: fer.fer(tokenized, *fer.load_error_detector(cache)))
        if "spider_fl" not in wanted:  # aac-metrics gives the class probabilities with SPIDEr-FL only
            for key in [k for k in result.corpus if k.startswith("fluency_error.")]:
                del result.corpus[key], result.per_clip[key]
    for name in ("spider", "fense", "spider_fl"):
        if name in wanted:
            parts = COMPONENTS[name][-2:]
            result.combine(name, parts, (lambda a, b: (a + b) / 2) if name == "spider" else penalized)
    if "spider_max" in wanted:
        result.add("spider_max", lambda: spider_max(tokenized_n_best, tokenized_refs, spice_options))
    if wanted & {"vocab", "distinct"}:
        from audiocap.metrics import vocab  # PyTorch (its generator draws as aac-metrics' do): see above

        if "vocab" in wanted:
            result.add("vocab", lambda: vocab.aac_vocab_stats(tokenized, tokenized_refs))
        if "distinct" in wanted:
            result.corpus.update(vocab.distinct_stats(tokenized))
    return result


def _named(name: str, mean: float, per_clip: np.ndarray):
    return {name: float(mean)}, {name: per_clip}


def _one_score_metrics(wanted, tokenized, tokenized_refs, candidates, references, spice_options, cache):
    """(name, compute -> (mean, per-clip)) of the metrics asked for that give one score each, but those scored in chunks."""
    def sbert():
        from audiocap.metrics import sbert_sim  # PyTorch: see score

        # the model reads the PTB-tokenized captions, as aac-metrics' evaluate gives them
        return sbert_sim.similarity(tokenized, tokenized_refs, sbert_sim.load_sbert(cache))

    def minilm():
        from audiocap.metrics.minilm_sim import minilm_similarity

        return minilm_similarity(candidates, references)

    metrics = {"spice": lambda: spice.spice(tokenized, tokenized_refs, spice_options),
               "sbert_sim": sbert, "minilm_sim": minilm}
    return [(name, compute) for name, compute in metrics.items() if name in wanted]


def metric_names(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """The metrics asked for, as a list, presets expanded; a string is one name or a comma-separated list
    (as on the command line), never its letters."""
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    metrics = [m.strip() for m in metrics if m.strip()]
    choices = f"choose from {', '.join(METRICS)} or a preset ({', '.join(PRESETS)})"
    if not metrics:
        raise MetricError(f"no metrics given; {choices}")
    unknown = sorted(set(metrics) - set(METRICS) - set(PRESETS))
    if unknown:
        raise MetricError(f"unknown metrics {unknown}; {choices}")
    return list(dict.fromkeys(m for name in metrics for m in PRESETS.get(name, (name,))))


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
    """Corpus scores (only those computed; keys as `score_names` lists them); metrics that could not be
    computed are warned about."""
    result = score(candidates, references, metrics, **options)
    for name, reason in result.errors.items():
        warnings.warn(f"{name} not computed: {reason}")
    return result.corpus
