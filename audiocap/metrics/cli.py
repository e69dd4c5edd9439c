"""`audiocap score PREDICTIONS.csv --references CAPTIONS.csv`: score predicted captions.

PREDICTIONS has columns `file_name,caption_predicted`, one row per file; CAPTIONS has
`file_name,caption_1..caption_N`, one row per clip (or is an AudioCaps CSV, `youtube_id,caption`, one row
per caption, whose youtube ids are the file names), and may hold more clips than PREDICTIONS.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

from audiocap.data.datasets import load_dataset, read_csv
from audiocap.errors import DataError, MetricError, first_few


def configure_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="CSV with file_name,caption_predicted")
    parser.add_argument("--references", type=Path, required=True, help="CSV with file_name,caption_1..caption_N, or an AudioCaps CSV")
    parser.add_argument("--metrics", default="bleu,meteor,rouge_l,cider_d",
                        help="comma-separated: bleu,meteor,rouge_l,cider_d,spice,spider,sbert_sim,vocab")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--per-clip", type=Path, metavar="OUT.csv", help="write per-clip scores here")
    parser.add_argument("--meteor-jar", type=Path, help="meteor-1.5.jar (default: the one in pycocoevalcap)")
    parser.add_argument("--spice-home", type=Path, help="folder with spice-1.0.jar and lib/ (CoreNLP 3.6.0 jars)")


def read_predictions_and_references(predictions: Path, references: Path):
    """(file names, candidates, reference lists) of the predicted clips, in prediction order.

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


def read_predictions(path: Path) -> dict[str, str]:
    """file_name -> predicted caption; one row per file, as `audiocap caption --format csv` writes."""
    columns, rows = read_csv(path, what="predictions CSV")
    if "start_seconds" in columns:  # `audiocap caption --segment`: several windows per file
        raise DataError(f"{path}: has start_seconds/end_seconds columns: segment captions cannot be scored "
                        "per file against whole-clip references; caption the clips without --segment")
    missing = [c for c in ["file_name", "caption_predicted"] if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {columns})")
    if not rows:
        raise DataError(f"{path}: no predictions below the header; write one row per clip "
                        "(`audiocap caption --format csv` does)")
    names = [row["file_name"] or "" for row in rows]
    _check_keys(path, names, "more than one prediction", "keep one prediction per file")
    # a short row has no prediction cell (None): an empty prediction, scored 0 with a warning
    return {name: row["caption_predicted"] or "" for name, row in zip(names, rows)}


def read_references(path: Path) -> dict[str, list[str]]:
    """file_name -> its non-empty reference captions (maybe none); each clip must have one row."""
    items = load_dataset(path, Path(path).parent)  # Clotho-shaped or AudioCaps (keyed by youtube id)
    _check_keys(path, [item.key for item in items], "more than one row",
                "give each clip one row, its captions in caption_1..caption_N")
    return {item.key: [c for c in item.captions if c] for item in items}


def _check_keys(path: Path, names: list[str], problem: str, fix: str) -> None:
    """Refuse empty and repeated file names: a dict keyed by them would silently keep only the last row."""
    if blank := [row for row, name in enumerate(names, start=2) if not name]:
        raise DataError(f"{path}: {len(blank)} rows have no file_name (row {first_few(blank)}, header = row 1); "
                        "fill it in or delete the row")
    counts = Counter(names)
    if repeated := [name for name, n in counts.items() if n > 1]:
        raise DataError(f"{path}: {len(repeated)} file names have {problem}: {first_few(repeated)}; {fix}")


def check_writable(path: Path, option: str) -> None:
    """Fail before scoring (METEOR alone can take minutes), not when the scores are written."""
    folder = path.parent
    if path.is_dir():
        raise DataError(f"{option} {path}: is a folder; give a file name such as {path / 'per_clip.csv'}")
    if not folder.is_dir():
        raise DataError(f"{option} {path}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"{option} {path}: not writable; choose another path")


def write_per_clip(path: Path, names: list[str], per_clip: dict) -> None:
    """Written to a temporary file renamed over `path`: an interrupted run leaves no half-written CSV."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", *per_clip])
            for i, name in enumerate(names):
                writer.writerow([name, *(f"{values[i]:.10g}" for values in per_clip.values())])
        os.replace(partial, path)
    except OSError as err:  # e.g. a full disk: the corpus scores are printed already
        partial.unlink(missing_ok=True)
        raise DataError(f"--per-clip {path}: cannot write ({err.strerror}); the corpus scores above are complete") from None


def run_score(args: argparse.Namespace) -> int:
    from audiocap.metrics import metric_names, score
    from audiocap.metrics.meteor import MeteorOptions
    from audiocap.metrics.sbert import MODEL_NAME
    from audiocap.metrics.spice import SpiceOptions

    # everything that can fail is checked before scoring, the long part
    try:
        metrics = metric_names(args.metrics)
    except MetricError as error:
        raise MetricError(f"--metrics {args.metrics!r}: {error}") from None
    if args.per_clip:
        check_writable(args.per_clip, "--per-clip")
    names, candidates, references = read_predictions_and_references(args.predictions, args.references)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we print problems ourselves below
        result = score(candidates, references, metrics, MeteorOptions(jar=args.meteor_jar),
                       SpiceOptions(home=args.spice_home))
    empty = sum(not c.strip() for c in candidates)
    if empty:
        print(f"warning: {empty} empty candidates scored 0", file=sys.stderr)
    if "sbert_sim" in result.corpus:
        print(f"note: sbert_sim uses {MODEL_NAME} (not FENSE's model)", file=sys.stderr)
    if args.json:
        print(json.dumps(result.corpus))
    else:
        for key, value in result.corpus.items():
            label = f"{key} [{MODEL_NAME}]" if key == "sbert_sim" else key
            print(f"{label:<12} {value:.4f}" if isinstance(value, float) else f"{label:<12} {value}")
    if args.per_clip:
        write_per_clip(args.per_clip, names, result.per_clip)
    for name, reason in result.errors.items():
        print(f"error: {name}: {reason}", file=sys.stderr)
    return 2 if result.errors else 0
