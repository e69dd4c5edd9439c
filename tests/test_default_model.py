"""The bundled default model: captions held-out recordings it has never heard, naming their source."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import audiocap
from audiocap.caption import DEFAULT_MODEL
from audiocap.model_file import read_model_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import source_hit  # noqa: E402
from default_data import esc50  # noqa: E402

# examples/README.md: four held-out ESC-50 clips (never trained on, not even inside a mixture)
EXAMPLES = {"4-184575-A-0.flac": "dog", "4-163264-A-10.flac": "rain", "4-183487-A-1.flac": "rooster",
            "4-147657-A-46.flac": "church_bells"}


def test_bundled_model_is_small_and_self_contained():
    assert DEFAULT_MODEL.stat().st_size <= 25 * 2**20
    info = read_model_info(DEFAULT_MODEL)
    assert info["encoder"]["name"] == "aisfx-yamnet" and info["dimensions"]["rlssr_hidden"] > 0
    assert info["training"]["config"]["train_csv"].endswith("train.csv")  # not the held-out CSV


def test_examples_were_held_out_of_training(shared_data):
    """The builder's held-out ESC-50 list (re-derived from ../shared) contains every example clip."""
    heldout = {clip.file_name for clip in heldout_esc50(shared_data)}
    assert set(EXAMPLES) <= heldout


def heldout_esc50(shared_data: Path) -> list:
    """The 100 ESC-50 clips the default dataset holds out (build_default_dataset, seed 0)."""
    clips = esc50.load_esc50(shared_data / "esc50")
    return esc50.choose_heldout(clips, random.Random("0/split"))


def test_default_model_names_the_source_of_unseen_clips(shared_data):
    """On the 100 held-out ESC-50 clips (2 per class) the bundled model names the source in about
    9 of 10 captions (87 when written), and in at least 3 of the 4 README examples."""
    model = audiocap.load_model()  # no path: the bundled model
    clips = heldout_esc50(shared_data)
    captions = model.caption([clip.path for clip in clips], beam_size=3, batch_size=16)
    synonyms = source_hit.load_synonyms()
    hits = {clip.file_name: source_hit.names_source(caption, clip.category, synonyms)
            for clip, caption in zip(clips, captions)}
    assert sum(hits.values()) >= 80, sum(hits.values())
    assert sum(hits[name] for name in EXAMPLES) >= 3, {name: hits[name] for name in EXAMPLES}
