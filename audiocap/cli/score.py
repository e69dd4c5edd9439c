"""`audiocap score PREDICTIONS.csv --references CAPTIONS.csv`: score predicted captions (file formats:
audiocap.data.predictions)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from pathlib import Path

from audiocap.cli.args import check_output_folder
from audiocap.errors import DataError, MetricError


def metrics_help() -> str:
    from audiocap.metrics import METRICS, MODELS, PRESETS

    listed = ", ".join(f"{m} [{MODELS[m]}]" if m in MODELS else m for m in METRICS)
    presets = "; ".join(f"{name} = {','.join(metrics)}" for name, metrics in PRESETS.items())
    return (f"comma-separated metrics or presets (default: bleu,meteor,rouge_l,cider_d): {listed}; "
            f"spider = (cider_d + spice) / 2; spider_fl, fense = spider, sbert_sim penalized where fer detects an "
            f"error; spider_max needs caption_predicted_1..K; presets as in aac-metrics: {presets}")


def configure_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="CSV with file_name,caption_predicted (or caption_predicted_1..K)")
    parser.add_argument("--references", type=Path, required=True, help="CSV with file_name,caption_1..caption_N, or an AudioCaps CSV")
    parser.add_argument("--metrics", default="bleu,meteor,rouge_l,cider_d", help=metrics_help())
    parser.add_argument("--metrics-cache", type=Path, metavar="DIR",
                        help="models of sbert_sim/fer/fense/spider_fl (default: $AUDIOCAP_METRICS_CACHE, else "
                             "~/.cache/audiocap/metrics; `audiocap download fense` fills it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--per-clip", type=Path, metavar="OUT.csv", help="write per-clip scores here")
    parser.add_argument("--meteor-jar", type=Path, help="meteor-1.5.jar (default: the one in pycocoevalcap)")
    parser.add_argument("--spice-home", type=Path, help="folder with spice-1.0.jar and lib/ (CoreNLP 3.6.0 jars)")


def check_writable(path: Path, option: str) -> None:
    """Fail before scoring (METEOR alone can take minutes), not when the scores are written."""
    if path.is_dir():
        raise DataError(f"{option} {path}: is a folder; give a file name such as {path / 'per_clip.csv'}")
    check_output_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise DataError(f"{option} {path}: not writable; choose another path")


def write_per_clip(path: Path, names: list[str], per_clip: dict) -> None:
    """Written to a temporary file renamed over `path`: an interrupted run leaves no half-written CSV."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
    from audiocap.data.predictions import read_predictions_and_references
    from audiocap.metrics import MODELS, metric_names, score, with_components
    from audiocap.metrics.fense_models import check_models, metrics_cache
    from audiocap.metrics.meteor import MeteorOptions
    from audiocap.metrics.spice import SpiceOptions

    # everything that can fail is checked before scoring, the long part
    try:
        metrics = metric_names(args.metrics)
    except MetricError as error:
        raise MetricError(f"--metrics {args.metrics!r}: {error}") from None
    wanted = with_components(metrics)
    cache = metrics_cache(args.metrics_cache)
    check_models(cache, sbert="sbert_sim" in wanted, echecker="fer" in wanted)
    if args.per_clip:
        check_writable(args.per_clip, "--per-clip")
    names, n_best, references = read_predictions_and_references(args.predictions, args.references)
    if "spider_max" in metrics and len(n_best[0]) < 2:
        raise MetricError(f"spider_max: {args.predictions} has one caption per clip; it needs caption_predicted_1..K "
                          "columns (`audiocap caption --n-best K --format csv` writes them)")
    candidates = [captions[0] for captions in n_best]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # we print problems ourselves below
        result = score(candidates, references, metrics, MeteorOptions(jar=args.meteor_jar),
                       SpiceOptions(home=args.spice_home), metrics_cache=cache, n_best=n_best)
    empty = sum(not c.strip() for c in candidates)
    if empty:
        print(f"warning: {empty} empty candidates scored 0", file=sys.stderr)
    if args.json:
        print(json.dumps(result.corpus))
    else:
        for key, value in result.corpus.items():
            label = f"{key} [{MODELS[key]}]" if key.endswith("_sim") else key
            print(f"{label:<12} {value:.4f}" if isinstance(value, float) else f"{label:<12} {value}")
    if args.per_clip:
        write_per_clip(args.per_clip, names, result.per_clip)
    for name, reason in result.errors.items():
        print(f"error: {name}: {reason}", file=sys.stderr)
    return 2 if result.errors else 0
