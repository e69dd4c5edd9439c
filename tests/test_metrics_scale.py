"""`audiocap score` on many clips: scoring in chunks keeps its memory near that of the captions it reads.
(Values: tests/test_metrics.py checks chunked scores against pycocoevalcap; the 1M-row figures are
benchmarks/score_scale.py's.)"""
from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# In a child process: read the CSVs as `audiocap score` does, reset the peak resident memory (Linux: 5 in
# clear_refs), score, and print the peak's growth over the memory held once the captions were read.
CHILD = """
import re, sys
from pathlib import Path
from audiocap.data.predictions import read_predictions_and_references
from audiocap.metrics import score

def kb(field):
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

names, n_best, references = read_predictions_and_references(Path(sys.argv[1]), Path(sys.argv[2]))
held = kb("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
result = score([c[0] for c in n_best], references, ["bleu", "rouge_l", "cider_d"])
print((kb("VmHWM") - held) // 1024, held // 1024, result.corpus["cider_d"])
"""
SCORING_MB = 300  # the scoring's own growth at 50,000 clips (whole-corpus n-gram tables took ~1 GB more)


def write_csvs(folder: Path, shared_data: Path, rows: int) -> tuple[Path, Path]:
    """Real Clotho captions: each row a random caption as the candidate and a random clip's 5 as references."""
    clips = []
    for path in sorted((shared_data / "clotho").glob("clotho_captions_*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            clips += [[row[f"caption_{k}"] for k in range(1, 6)] for row in csv.DictReader(f)]
    rng = random.Random(0)
    predictions, references = folder / "predictions.csv", folder / "references.csv"
    with open(predictions, "w", newline="", encoding="utf-8") as p, open(references, "w", newline="", encoding="utf-8") as r:
        write_prediction, write_reference = csv.writer(p), csv.writer(r)
        write_prediction.writerow(["file_name", "caption_predicted"])
        write_reference.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
        for i in range(rows):
            write_prediction.writerow([f"{i}.wav", rng.choice(rng.choice(clips))])
            write_reference.writerow([f"{i}.wav", *rng.choice(clips)])
    return predictions, references


def test_scoring_50000_clips_needs_little_memory_beyond_their_captions(tmp_path, shared_data):
    predictions, references = write_csvs(tmp_path, shared_data, 50_000)
    run = subprocess.run([sys.executable, "-c", CHILD, str(predictions), str(references)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    growth_mb, held_mb, cider_d = run.stdout.split()
    assert int(growth_mb) < SCORING_MB, f"scoring took {growth_mb} MB beyond the {held_mb} MB of captions read"
    assert 0 < float(cider_d) < 10
