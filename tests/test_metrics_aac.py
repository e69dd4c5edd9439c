"""FER, sbert_sim, FENSE, SPIDEr-FL, SPIDEr-max, vocab and the presets against aac-metrics 0.6.0 itself.

Both packages get the same stand-in models (fense_stand_ins: tiny BERTs from real Clotho captions, saved as
`audiocap download fense` lays them out) and real system outputs (../shared/data/system_outputs). aac-metrics'
`evaluate` PTB-tokenizes every caption with Java before its metrics; its Java checks refuse Java 17, so its
functional metrics are called directly on our tokenization (identical to the Java tokenizer, test_metrics.py).
SPICE cannot run here (no CoreNLP jars): for SPIDEr, SPIDEr-FL and SPIDEr-max both packages are given the same
per-caption SPICE values, so what is compared is CIDEr-D, the fluency detector and how each composes them.
aac-metrics imports msclap (CLAP metrics, not compared) whose torchaudio does not load with this torch: a
stand-in module takes its place. Its import takes ~25 s, hence one module.
"""
from __future__ import annotations

import csv
import importlib
import sys
import types

import numpy as np
import pytest
import torch

from audiocap.metrics import PRESETS, score
from audiocap.metrics.tokenizer import tokenize_batch
from audiocap.metrics.vocab import aac_vocab_stats
from tests.fense_stand_ins import CHECKPOINT, SBERT, build_metrics_cache

sys.modules.setdefault("msclap", types.SimpleNamespace(CLAP=None))
aac_functional = pytest.importorskip("aac_metrics.functional")
from aac_metrics.functional.fer import BERTFlatClassifier  # noqa: E402

# the modules (aac_metrics.functional re-exports functions under the same names)
aac_evaluate = importlib.import_module("aac_metrics.functional.evaluate")
aac_spider_module = importlib.import_module("aac_metrics.functional.spider")

TOLERANCE = 1e-6


def read_system_output(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["caption_predicted"] for r in rows], [[r[f"caption_{k}"] for k in range(1, 6)] for r in rows]


@pytest.fixture(scope="module", params=["example_1", "example_2"])
def system(request, shared_data):
    return read_system_output(shared_data / "system_outputs" / f"{request.param}.csv")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, shared_data):
    candidates, _ = read_system_output(shared_data / "system_outputs" / "example_1.csv")
    return build_metrics_cache(tmp_path_factory.mktemp("metrics-cache"),
                               shared_data / "clotho" / "clotho_captions_development.csv", tokenize_batch(candidates))


@pytest.fixture(scope="module")
def aac_models(cache):
    """The same files loaded the way aac-metrics loads them (its BERTFlatClassifier, AutoTokenizer,
    SentenceTransformer): its own loader only takes names it downloads."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    detector = BERTFlatClassifier(model_type=str(cache / "bert-base-uncased"), num_classes=6)
    states = torch.load(cache / CHECKPOINT, weights_only=True)
    states["state_dict"].pop("encoder.embeddings.position_ids")  # as aac-metrics does with transformers >= 4.31
    detector.load_state_dict(states["state_dict"])
    return dict(echecker=detector.eval(), echecker_tokenizer=AutoTokenizer.from_pretrained(cache / "bert-base-uncased"),
                sbert_model=SentenceTransformer(str(cache / SBERT), device="cpu"), device="cpu")


@pytest.fixture
def same_spice(monkeypatch):
    """One SPICE value per tokenized caption, given to both packages in place of the jar."""
    values: dict[str, float] = {}

    def value(caption: str) -> float:
        return values.setdefault(caption, float(np.random.default_rng(len(values)).uniform(0, 0.4)))

    def ours(candidates, references, options=None):
        per_clip = np.array([value(c) for c in candidates])
        return float(per_clip.mean()), per_clip

    def theirs(candidates, mult_references, return_all_scores=True, **kwargs):
        per_clip = torch.tensor([value(c) for c in candidates], dtype=torch.float64)
        return {"spice": per_clip.mean()}, {"spice": per_clip}

    monkeypatch.setattr("audiocap.metrics.spice.spice", ours)
    monkeypatch.setattr(aac_spider_module, "spice", theirs)


def assert_equal_scores(ours: dict, theirs: dict, keys=None):
    keys = keys or theirs.keys()
    for key in keys:
        assert np.allclose(np.asarray(ours[key], dtype=np.float64), np.asarray(theirs[key], dtype=np.float64),
                           atol=TOLERANCE, rtol=0), key


def tokenized(candidates, references):
    flat = tokenize_batch(candidates + [r for refs in references for r in refs])
    return flat[:len(candidates)], [flat[len(candidates) + 5 * i: len(candidates) + 5 * i + 5] for i in range(len(candidates))]


def test_fense_fer_and_sbert_sim_equal_aac_metrics(system, cache, aac_models):
    candidates, references = system
    result = score(candidates, references, "fense", metrics_cache=cache)
    assert not result.errors and set(result.corpus) == {"sbert_sim", "fer", "fense"}
    corpus, per_clip = aac_functional.fense(*tokenized(candidates, references), **aac_models)
    assert_equal_scores(result.corpus, corpus)
    assert_equal_scores(result.per_clip, per_clip)
    assert 0.2 < result.corpus["fer"] < 0.8  # the stand-in detector flags some captions, not all
    assert result.corpus["fense"] < result.corpus["sbert_sim"]


def test_spider_fl_equals_aac_metrics_with_the_same_spice(system, cache, aac_models, same_spice):
    candidates, references = system
    result = score(candidates, references, "spider_fl", metrics_cache=cache)
    assert not result.errors
    aac_models = {k: v for k, v in aac_models.items() if k != "sbert_model"}
    corpus, per_clip = aac_functional.spider_fl(*tokenized(candidates, references), **aac_models)
    assert set(result.corpus) == set(corpus)  # cider_d, spice, spider, fer, fluency_error.*_prob, spider_fl
    assert_equal_scores(result.corpus, corpus)
    assert_equal_scores(result.per_clip, per_clip)
    assert result.corpus["spider_fl"] < result.corpus["spider"]


def test_spider_max_equals_aac_metrics_with_the_same_spice(system, same_spice):
    """Three real captions per clip (the system's and two human ones) against the other three references."""
    candidates, references = system
    n_best = [[c, refs[0], refs[1]] for c, refs in zip(candidates, references)]
    others = [refs[2:] for refs in references]
    result = score([nb[0] for nb in n_best], others, "spider_max", n_best=n_best)
    assert not result.errors
    flat = tokenize_batch([c for nb in n_best for c in nb] + [r for refs in others for r in refs])
    mult_candidates = [flat[3 * i: 3 * i + 3] for i in range(len(n_best))]
    start = 3 * len(n_best)
    mult_references = [flat[start + 3 * i: start + 3 * i + 3] for i in range(len(n_best))]
    corpus, per_clip = aac_functional.spider_max(mult_candidates, mult_references)
    assert_equal_scores(result.corpus, corpus)
    assert_equal_scores(result.per_clip, per_clip)
    chosen = np.isclose(result.per_clip["spider_max"][:, None], [[0]])  # sanity: the max is a real choice
    assert not chosen.all()


def test_vocab_statistics_and_presets_equal_aac_metrics(system):
    candidates, references = system
    tokenized_candidates, tokenized_references = tokenized(candidates, references)
    ours_corpus, ours_per_clip = aac_vocab_stats(tokenized_candidates, tokenized_references)
    corpus, per_clip = aac_functional.vocab(tokenized_candidates, tokenized_references)
    assert set(ours_corpus) == set(corpus)
    assert_equal_scores(ours_corpus, corpus)
    assert_equal_scores(ours_per_clip, per_clip)
    for name, metrics in PRESETS.items():
        assert metrics == aac_evaluate.METRICS_SETS[name]


def test_dcase2024_preset_gives_aac_metrics_keys(shared_data, cache, aac_models, same_spice):
    """`--metrics dcase2024` computes aac-metrics' set and names every score as aac-metrics does."""
    candidates, references = read_system_output(shared_data / "system_outputs" / "example_1.csv")
    candidates, references = candidates[:80], references[:80]
    result = score(candidates, references, "dcase2024", metrics_cache=cache)
    assert not result.errors, result.errors
    tokens = tokenized(candidates, references)
    detector = {k: v for k, v in aac_models.items() if k != "sbert_model"}
    theirs = {"meteor"} | set(aac_functional.spider_fl(*tokens, **detector)[0]) \
        | set(aac_functional.fense(*tokens, **aac_models)[0]) | set(aac_functional.vocab(*tokens)[0])
    assert set(result.corpus) == theirs
