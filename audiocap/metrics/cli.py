"""`audiocap score PREDICTIONS.csv --references CAPTIONS.csv`: score predicted captions.

PREDICTIONS has columns `file_name,caption_predicted`; CAPTIONS has `file_name,caption_1..caption_N`.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path

from audiocap.data.datasets import load_captions_csv, read_csv
from audiocap.errors import DataError


def configure_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="CSV with file_name,caption_predicted")
    parser.add_argument("--references", type=Path, required=True, help="CSV with file_name,caption_1..caption_N")
    parser.add_argument("--metrics", default="bleu,meteor,rouge_l,cider_d",
                        help="comma-separated: bleu,meteor,rouge_l,cider_d,spice,spider,sbert_sim,vocab")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--per-clip", type=Path, metavar="OUT.csv", help="write per-clip scores here")
    parser.add_argument("--meteor-jar", type=Path, help="meteor-1.5.jar (default: the one in pycocoevalcap)")
    parser.add_argument("--spice-home", type=Path, help="folder with spice-1.0.jar and lib/ (CoreNLP 3.6.0 jars)")


def read_predictions_and_references(predictions: Path, references: Path):
    """(file names, candidates, reference lists) of the clips present in both CSVs, in prediction order.

    Both are read as training and evaluation read theirs (`audiocap.data.datasets`): UTF-8 with or
    without a byte-order mark; empty reference captions are dropped."""
    columns, rows = read_csv(predictions, what="predictions CSV")
    missing = [c for c in ["file_name", "caption_predicted"] if c not in columns]
    if missing:
        raise DataError(f"{predictions}: missing column(s) {', '.join(missing)} (has {columns})")
    # a short row has no prediction cell (None): an empty prediction, scored 0 with a warning
    predicted = {row["file_name"]: row["caption_predicted"] or "" for row in rows}
    referenced = {item.key: [c for c in item.captions if c]
                  for item in load_captions_csv(references, Path(references).parent)}
    only_predicted = sorted(set(predicted) - set(referenced))
    only_referenced = sorted(set(referenced) - set(predicted))
    if only_predicted or only_referenced:
        raise DataError(
            f"file_name sets differ: {len(only_predicted)} only in {predictions} {only_predicted[:10]}, "
            f"{len(only_referenced)} only in {references} {only_referenced[:10]}"
        )
    names = list(predicted)
    return names, [predicted[n] for n in names], [referenced[n] for n in names]


def run_score(args: argparse.Namespace) -> int:
    from audiocap.metrics import METRICS, score
    from audiocap.metrics.meteor import MeteorOptions
    from audiocap.metrics.sbert import MODEL_NAME
    from audiocap.metrics.spice import SpiceOptions

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise DataError(f"--metrics: unknown {unknown}; choose from {','.join(METRICS)}")
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
        with open(args.per_clip, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", *result.per_clip])
            for i, name in enumerate(names):
                writer.writerow([name, *(f"{values[i]:.10g}" for values in result.per_clip.values())])
    for name, reason in result.errors.items():
        print(f"error: {name}: {reason}", file=sys.stderr)
    return 2 if result.errors else 0
