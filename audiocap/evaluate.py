"""`audiocap evaluate`: caption every clip of a captions CSV, then score against its references.

    audiocap evaluate --model runs/clotho/model.safetensors \\
        --captions clotho_captions_evaluation.csv --audio-dir audio/evaluation --out results/

writes `predictions.csv` (DCASE format `file_name,caption_predicted`) and `scores.json`. The CSV is
Clotho-shaped (`file_name,caption_1..caption_N`) or an AudioCaps CSV (`youtube_id,caption`, audio files
named by youtube id). `--skip-bad` scores the clips whose audio is there and decodes (AudioCaps copies
always lack some videos) and records how many were left out.
"""
from __future__ import annotations

import sys
from pathlib import Path


def metric_names(text: str) -> list[str]:
    """`--metrics bleu,cider_d`, checked before any clip is captioned."""
    import argparse

    from audiocap.metrics import METRICS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(METRICS)}")
    return names


def configure_evaluate(parser) -> None:
    from audiocap.cli import positive_int
    from audiocap.transcribe import PRECISIONS  # a light module: torch is imported inside its functions

    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--captions", required=True, type=Path,
                        help="CSV file_name,caption_1..caption_N, or an AudioCaps CSV (youtube_id,caption)")
    parser.add_argument("--audio-dir", required=True, type=Path, help="folder holding the CSV's audio files")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default: ./evaluation)")
    parser.add_argument("--beam", type=positive_int(), default=3, help="beam size; 1 = greedy (default: 3)")
    parser.add_argument("--batch-size", type=positive_int(), default=8)
    parser.add_argument("--metrics", type=metric_names, default=None,
                        help="comma-separated metric names (default: those of audiocap.metrics.evaluate)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="score the clips whose audio exists and decodes; without it, any bad row is an error")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="decoder weights (default fp32: the model's scores exactly as trained; "
                        "see `audiocap caption -h`)")


def run_evaluate(args) -> int:
    import csv
    import json

    from tqdm import tqdm

    from audiocap.data.datasets import load_dataset
    from audiocap.data.validate import check_items
    from audiocap.errors import AudiocapError
    from audiocap.metrics import evaluate
    from audiocap.transcribe import load_model

    # everything that can fail is checked before the clips are captioned (the long part)
    check_out_dir(args.out)
    all_items = load_dataset(args.captions, args.audio_dir)
    items = check_items(all_items, args.skip_bad, progress=sys.stderr.isatty(), skip_hint="--skip-bad")
    pipeline = load_model(args.model, args.device, args.precision)
    check_durations([it.audio_path for it in items], pipeline.max_seconds)
    predictions = []
    with tqdm(total=len(items), unit="file", desc="captioning", file=sys.stderr) as progress:
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            predictions += pipeline.caption([it.audio_path for it in batch], args.beam, args.batch_size)
            progress.update(len(batch))

    # the captions are written before scoring: a metric that fails (e.g. no Java for METEOR) loses none of them
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption_predicted"])
        writer.writerows((it.key, caption) for it, caption in zip(items, predictions))
    try:
        scores = evaluate(predictions, [it.captions for it in items],
                          **({"metrics": args.metrics} if args.metrics else {}))
    except AudiocapError as err:
        raise type(err)(f"{err}\nthe captions are saved in {args.out / 'predictions.csv'}; score them again with "
                        f"`audiocap score {args.out / 'predictions.csv'} --references {args.captions}`") from None
    report = {"model": str(args.model or "default"), "captions": str(args.captions), "beam_size": args.beam,
              "precision": pipeline.precision,
              "n_clips": len(items), "n_skipped": len(all_items) - len(items), "scores": scores}
    (args.out / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, value in scores.items():
        if isinstance(value, (int, float)):
            print(f"{name:>10s}  {value:.4f}")
    print(f"wrote {args.out / 'predictions.csv'} and {args.out / 'scores.json'}", file=sys.stderr)
    return 0


def check_out_dir(out: Path) -> None:
    from audiocap.errors import ConfigError

    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder; pass a folder for predictions.csv "
                          "and scores.json")


def check_durations(paths: list[Path], max_seconds: float) -> None:
    """Evaluation captions every clip whole: one longer than the model covers fails here, before any is
    captioned, rather than mid-run (the headers give the durations without decoding the audio)."""
    from audiocap.audio import audio_duration
    from audiocap.errors import DataError, first_few

    too_long = sorted(((audio_duration(p), p) for p in paths), reverse=True)
    too_long = [(seconds, p) for seconds, p in too_long if seconds > max_seconds]
    if too_long:
        listed = first_few((f"{p} ({seconds:.1f} s)" for seconds, p in too_long), 3)
        raise DataError(f"{len(too_long)} clip(s) longer than this model captions at once ({max_seconds:.1f} s): "
                        f"{listed}; evaluation scores whole clips: cut them into clips of at most "
                        f"{max_seconds:.1f} s, or evaluate a model trained with a larger model.max_audio_frames")
