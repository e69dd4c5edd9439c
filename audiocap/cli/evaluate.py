"""`audiocap evaluate`: caption every clip of a captions CSV, then score against its references.

    audiocap evaluate --model runs/clotho/model.safetensors \\
        --captions clotho_captions_evaluation.csv --audio-dir audio/evaluation --out results/

writes `predictions.csv` (DCASE format `file_name,caption_predicted`) and `scores.json`. The CSV is
Clotho-shaped (`file_name,caption_1..caption_N`) or an AudioCaps CSV (`youtube_id,caption`, audio files
named by youtube id). `--skip-bad` scores the clips whose audio is there and decodes (AudioCaps copies
always lack some videos) and records how many were left out.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from audiocap.cli.args import check_output_folder, metric_list, positive_int
from audiocap.options import PRECISIONS


def configure_evaluate(parser) -> None:
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--captions", required=True, type=Path,
                        help="CSV file_name,caption_1..caption_N, or an AudioCaps CSV (youtube_id,caption)")
    parser.add_argument("--audio-dir", required=True, type=Path, help="folder holding the CSV's audio files")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default: ./evaluation)")
    parser.add_argument("--beam", type=positive_int(), default=3, help="beam size; 1 = greedy (default: 3)")
    parser.add_argument("--batch-size", type=positive_int(), default=8)
    parser.add_argument("--metrics", type=metric_list, default=None,
                        help="comma-separated metric names (default: those of audiocap.metrics.evaluate)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="score the clips whose audio exists and decodes; without it, any bad row is an error")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="decoder weights (default fp32: the model's scores exactly as trained; "
                        "see `audiocap caption -h`)")


def run_evaluate(args) -> int:
    from tqdm import tqdm

    from audiocap.audio import audio_duration
    from audiocap.caption import load_model
    from audiocap.data.datasets import load_dataset
    from audiocap.data.validate import check_items
    from audiocap.errors import AudiocapError, check_not_too_long
    from audiocap.metrics import evaluate

    # everything that can fail is checked before the clips are captioned (the long part)
    check_output_folder(args.out, "--out")
    all_items = load_dataset(args.captions, args.audio_dir)
    items = check_items(all_items, args.skip_bad, progress=sys.stderr.isatty(), skip_hint="--skip-bad")
    pipeline = load_model(args.model, args.device, args.precision)
    # the headers give the durations without decoding the audio
    check_not_too_long({it.audio_path: audio_duration(it.audio_path) for it in items}, pipeline.max_seconds,
                       f"this model captions at once ({pipeline.max_seconds:.1f} s)",
                       f"evaluation scores whole clips: cut them into clips of at most {pipeline.max_seconds:.1f} s, "
                       "or evaluate a model trained with a larger model.max_audio_frames")
    predictions = []
    with tqdm(total=len(items), unit="file", desc="captioning", file=sys.stderr) as progress:
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            predictions += pipeline.caption([it.audio_path for it in batch], args.beam, args.batch_size)
            progress.update(len(batch))
    # the captions are written before scoring: a metric that fails (e.g. no Java for METEOR) loses none of them
    write_predictions(args.out / "predictions.csv", [it.key for it in items], predictions)
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


def write_predictions(path: Path, names: list[str], captions: list[str]) -> None:
    """The DCASE submission format `file_name,caption_predicted`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption_predicted"])
        writer.writerows(zip(names, captions))
