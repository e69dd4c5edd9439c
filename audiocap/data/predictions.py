"""Predicted captions and their references, read for scoring (`audiocap score`).

PREDICTIONS has columns `file_name,caption_predicted`, one row per file (or `caption_predicted_1..K`, the
K best candidates of each file as `audiocap caption --n-best K` writes them: spider_max scores all K, the
other metrics the first); CAPTIONS has
`file_name,caption_1..caption_N`, one row per clip (or is an AudioCaps CSV, `youtube_id,caption`, one row
per caption, whose youtube ids are the file names), and may hold more clips than PREDICTIONS.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from audiocap.data.datasets import csv_rows, dataset_captions, no_rows
from audiocap.errors import DataError, first_few


def read_predictions_and_references(predictions: Path, references: Path):
    """(file names, candidate lists, reference lists) of the predicted clips, in prediction order; each
    candidate list holds one caption, or the K of an n-best file.

    Every predicted clip must have references; references of clips without a prediction are left
    out (a note on stderr says how many), so a few clips can be scored against a whole split's CSV.
    Both are read as training and evaluation read theirs (`audiocap.data.datasets`): UTF-8 with or
    without a byte-order mark; empty reference captions are dropped."""
    predicted = read_predictions(predictions)
    referenced = read_references(references)
    if only_predicted := [n for n in predicted if n not in referenced]:
        raise DataError(f"{len(only_predicted)} predicted clips have no row in {references}: "
                        f"{first_few(only_predicted)}; score them against the CSV of their own split")
    # only the scored clips need a caption: an empty row elsewhere in a whole split's CSV does not matter
    if empty := [n for n in predicted if not referenced[n]]:
        raise DataError(f"{references}: {len(empty)} clips have no reference caption: {first_few(empty)}; "
                        "fill in at least one caption_N cell of each row")
    if unused := len(referenced) - len(predicted):
        print(f"note: {unused} of {len(referenced)} clips in {references} have no prediction; "
              f"scoring the {len(predicted)} predicted clips", file=sys.stderr)
    names = list(predicted)
    return names, [predicted[n] for n in names], [referenced[n] for n in names]


def prediction_columns(path: Path, columns: list[str]) -> list[str]:
    """`caption_predicted`, or `caption_predicted_1..K` (an n-best file), whichever the CSV has."""
    if "caption_predicted" in columns:
        return ["caption_predicted"]
    numbered = sorted(int(c.rpartition("_")[2]) for c in columns
                      if c.startswith("caption_predicted_") and c.rpartition("_")[2].isdigit())
    if numbered and numbered != list(range(1, len(numbered) + 1)):
        raise DataError(f"{path}: n-best columns must be caption_predicted_1..K without gaps (has "
                        f"{', '.join(f'caption_predicted_{k}' for k in numbered)})")
    return [f"caption_predicted_{k}" for k in numbered]


def read_predictions(path: Path) -> dict[str, list[str]]:
    """file_name -> its predicted caption(s); one row per file, as `audiocap caption --format csv` writes."""
    columns, rows = csv_rows(path, what="predictions CSV")
    if "start_seconds" in columns:  # `audiocap caption --segment`: several windows per file
        raise DataError(f"{path}: has start_seconds/end_seconds columns: segment captions cannot be scored "
                        "per file against whole-clip references; caption the clips without --segment")
    wanted = prediction_columns(path, columns)
    missing = [c for c in ["file_name"] if c not in columns] + ([] if wanted else ["caption_predicted (or caption_predicted_1..K)"])
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {columns})")
    names, predictions = [], []
    for row in rows:  # one at a time: a million rows as dicts would take gigabytes
        names.append(row["file_name"] or "")
        predictions.append([row[c] or "" for c in wanted])  # a short row's None: an empty prediction, scored 0
    if not names:
        raise DataError(f"{path}: no predictions below the header; write one row per clip "
                        "(`audiocap caption --format csv` does)")
    _check_keys(path, names, "more than one prediction", "keep one prediction per file")
    return dict(zip(names, predictions))


def read_references(path: Path) -> dict[str, list[str]]:
    """file_name -> its non-empty reference captions (maybe none); each clip must have one row."""
    names, captions = [], []
    for name, clip_captions in dataset_captions(path):  # Clotho-shaped or AudioCaps (keyed by youtube id)
        names.append(name)
        captions.append([c for c in clip_captions if c])
    if not names:
        raise no_rows(path)
    _check_keys(path, names, "more than one row", "give each clip one row, its captions in caption_1..caption_N")
    return dict(zip(names, captions))


def _check_keys(path: Path, names: list[str], problem: str, fix: str) -> None:
    """Refuse empty and repeated file names: a dict keyed by them would silently keep only the last row."""
    if blank := [row for row, name in enumerate(names, start=2) if not name]:
        raise DataError(f"{path}: {len(blank)} rows have no file_name (row {first_few(blank)}, header = row 1); "
                        "fill it in or delete the row")
    counts = Counter(names)
    if repeated := [name for name, n in counts.items() if n > 1]:
        raise DataError(f"{path}: {len(repeated)} file names have {problem}: {first_few(repeated)}; {fix}")
