"""The bundled default model: captions held-out recordings it has never heard, naming their source."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import audiocap
from audiocap.model_file import read_model_info
from audiocap.caption import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import source_hit  # noqa: E402

# examples/README.md: four held-out ESC-50 clips (never trained on, not even inside a mixture)
EXAMPLES = {"4-184575-A-0.flac": "dog", "4-163264-A-10.flac": "rain", "4-183487-A-1.flac": "rooster",
            "4-147657-A-46.flac": "church_bells"}


def test_bundled_model_is_small_and_self_contained():
    assert DEFAULT_MODEL.stat().st_size <= 25 * 2**20
    info = read_model_info(DEFAULT_MODEL)
    assert info["encoder"]["name"] == "aisfx" and info["dimensions"]["rlssr_hidden"] > 0
    assert info["training"]["config"]["train_csv"].endswith("train.csv")  # not the held-out CSV


def test_examples_were_held_out_of_training(shared_data, tmp_path):
    """The builder's held-out list (re-derived from ../shared) contains every ESC-50 example clip."""
    import csv

    import build_default_dataset as builder

    builder.build(builder.parse_args(["--shared", str(shared_data), "--out", str(tmp_path), "--backgrounds", "0",
                                      "--overlays", "0", "--sequences", "0", "--heldout-mixtures", "0"]))
    with open(tmp_path / "heldout.csv", newline="") as f:
        heldout = {row["file_name"] for row in csv.DictReader(f)}
    assert {name for name in EXAMPLES if name[0].isdigit()} <= heldout


def test_default_model_names_the_source_of_unseen_clips():
    model = audiocap.load_model()  # no path: the bundled model
    paths = [ROOT / "examples" / name for name in EXAMPLES]
    captions = model.caption(paths, beam_size=3)
    synonyms = source_hit.load_synonyms()
    for caption, category in zip(captions, EXAMPLES.values()):
        assert source_hit.names_source(caption, category, synonyms), (category, caption)


def test_readme_first_command_captions_the_examples():
    result = subprocess.run([sys.executable, "-m", "audiocap", "caption", str(ROOT / "examples")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(EXAMPLES) and all(": " in line for line in lines)
