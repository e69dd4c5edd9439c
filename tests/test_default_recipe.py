"""The default model's training data: written recipes, dataset builder, source hit rate."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "data_recipes"


def load_script(name: str):
    """scripts/ is not a package; load a script as a module by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


builder = load_script("build_default_dataset")
source_hit = load_script("source_hit")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def esc50_categories(shared_data) -> set[str]:
    return {row["category"] for row in read_rows(shared_data / "esc50" / "meta" / "esc50.csv")}


@pytest.fixture(scope="module")
def synonyms():
    return source_hit.load_synonyms(RECIPES / "source_synonyms.yaml")


# ------------------------------------------------------------------------------- recipes


def test_written_captions_cover_every_category(esc50_categories):
    written = builder.load_written_captions(RECIPES / "esc50_captions.csv")
    assert set(written) == esc50_categories
    for category, captions in written.items():
        assert len(set(captions)) >= 6, category
        for caption in captions:
            assert 6 <= len(caption.split()) <= 20, caption
            assert caption.lower().strip(" .") != category.replace("_", " ")


def test_clauses_and_synonyms_cover_every_category(esc50_categories, synonyms):
    phrases = builder.load_phrases(RECIPES / "esc50_clauses.yaml")
    assert set(phrases) == esc50_categories
    assert set(synonyms) == esc50_categories


def test_written_captions_and_clauses_name_their_source(synonyms):
    # Every training target names its source, so the synonym lists are complete for them.
    written = builder.load_written_captions(RECIPES / "esc50_captions.csv")
    phrases = builder.load_phrases(RECIPES / "esc50_clauses.yaml")
    for category in written:
        texts = written[category] + phrases[category].clauses + phrases[category].gerunds + phrases[category].nouns
        for text in texts:
            assert source_hit.names_source(text, category, synonyms), (category, text)


# ---------------------------------------------------------------------------- source hit


def test_source_hit_rate_matches_whole_words_and_phrases():
    synonyms = {"dog": ["dog", "barks"], "vacuum_cleaner": ["vacuum cleaner", "hoover"], "cat": ["cat"]}
    categories = {"a.wav": "dog", "b.wav": "vacuum_cleaner", "c.wav": "cat", "d.wav": "dog"}
    predictions = {
        "a.wav": "A DOG'S bark echoes.",  # apostrophe dropped -> "dogs", not "dog"
        "b.wav": "Someone runs a vacuum-cleaner.",  # hyphen is a word break
        "c.wav": "A cathedral bell rings.",  # "cat" inside a word does not count
        "d.wav": "Something barks twice.",
        "extra.wav": "a dog",  # not in the evaluation set: ignored
    }
    hits = source_hit.source_hits(predictions, categories, synonyms)
    assert hits == {"a.wav": False, "b.wav": True, "c.wav": False, "d.wav": True}
    assert source_hit.source_hit_rate(predictions, categories, synonyms) == 0.5


def test_source_hit_rate_refuses_missing_predictions():
    with pytest.raises(KeyError):
        source_hit.source_hit_rate({}, {"a.wav": "dog"}, {"dog": ["dog"]})


# ------------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("default_dataset")
    builder.build(shared_data, out, seed=3, overlays=8, sequences=8, val_mixtures=4)
    return out


def test_split_counts(built):
    manifest = json.loads((built / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts == {
        "train_rows": 314 + 15 + 12, "train_esc50": 314, "train_clotho_validation": 15,
        "mixtures": 16, "val_mixtures": 4, "heldout": 100, "categories": 50,
    }
    train, heldout = read_rows(built / "train.csv"), read_rows(built / "heldout.csv")
    assert len(train) == counts["train_rows"] and len(heldout) == 100
    val = {row["file_name"] for row in read_rows(built / "val.csv")}
    assert len(val) == 4 and not val & {row["file_name"] for row in train}
    categories = read_rows(built / "heldout_categories.csv")
    per_category: dict[str, int] = {}
    for row in categories:
        per_category[row["category"]] = per_category.get(row["category"], 0) + 1
    assert len(per_category) == 50 and set(per_category.values()) == {2}
    assert sorted(r["file_name"] for r in categories) == sorted(manifest["heldout"])


def test_heldout_clips_are_never_trained_on(built):
    heldout = {row["file_name"] for row in read_rows(built / "heldout_categories.csv")}
    train = {row["file_name"] for row in read_rows(built / "train.csv")}
    assert not heldout & train
    assert not heldout & {p.name for p in (built / "audio" / "train").iterdir()}
    for mixture in read_rows(built / "mixtures.csv"):
        assert mixture["first"] in train and mixture["second"] in train
        assert mixture["first"] not in heldout and mixture["second"] not in heldout
        assert mixture["first_category"] != mixture["second_category"]


def test_heldout_recordings_are_whole_where_possible(built):
    # Only fireworks and washing_machine have no recording with 1 or 2 takes.
    shared = json.loads((built / "manifest.json").read_text())["heldout_sharing_recording"]
    assert {name.rsplit("-", 1)[-1] for name in shared} <= {"48.flac", "35.flac"}
    assert len(shared) <= 4


def test_rows_have_five_captions_and_audio(built):
    for csv_name, audio_dir in (("train.csv", "train"), ("heldout.csv", "heldout")):
        for row in read_rows(built / csv_name):
            captions = [row[f"caption_{i}"] for i in range(1, 6)]
            assert all(c.strip() for c in captions), row
            assert (built / "audio" / audio_dir / row["file_name"]).is_file(), row["file_name"]


def test_mixture_audio_and_captions(built, synonyms):
    train = {row["file_name"]: row for name in ("train.csv", "val.csv") for row in read_rows(built / name)}
    for mixture in read_rows(built / "mixtures.csv"):
        audio, rate = sf.read(built / "audio" / "train" / mixture["file_name"], dtype="float32")
        assert rate == 44100 and audio.ndim == 1
        assert len(audio) == (5 if mixture["kind"] == "overlay" else 10) * 44100
        assert 0.1 < np.abs(audio).max() <= builder.PEAK_LIMIT + 1e-3
        captions = [train[mixture["file_name"]][f"caption_{i}"] for i in range(1, 6)]
        assert len(set(captions)) == 5
        for caption in captions:  # both sources are named in every caption
            assert source_hit.names_source(caption, mixture["first_category"], synonyms), caption
            assert source_hit.names_source(caption, mixture["second_category"], synonyms), caption


def test_builder_is_deterministic(shared_data, built, tmp_path):
    builder.build(shared_data, tmp_path, seed=3, overlays=8, sequences=8, val_mixtures=4)
    for name in ("train.csv", "val.csv", "heldout.csv", "mixtures.csv", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes(), name
    first = next((built / "audio" / "train").glob("mix_sequence_*.wav"))
    assert (tmp_path / "audio" / "train" / first.name).read_bytes() == first.read_bytes()
