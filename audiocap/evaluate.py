"""`audiocap evaluate`: caption every clip of a captions CSV, then score against its references.

    audiocap evaluate --model runs/clotho/model.safetensors \\
        --captions clotho_captions_evaluation.csv --audio-dir audio/evaluation --out results/

writes `predictions.csv` (DCASE format `file_name,caption_predicted`) and `scores.json`.
"""
from __future__ import annotations

import sys
from pathlib import Path


def configure_evaluate(parser) -> None:
    from audiocap.transcribe import PRECISIONS  # a light module: torch is imported inside its functions

    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--captions", required=True, type=Path, help="CSV file_name,caption_1..caption_N")
    parser.add_argument("--audio-dir", required=True, type=Path, help="folder holding the CSV's audio files")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default: ./evaluation)")
    parser.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default: 3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (default: those of audiocap.metrics.evaluate)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="decoder weights (default fp32: the model's scores exactly as trained; "
                        "see `audiocap caption -h`)")


def run_evaluate(args) -> int:
    import csv
    import json

    from tqdm import tqdm

    from audiocap.data.datasets import load_captions_csv
    from audiocap.data.validate import check_items
    from audiocap.metrics import evaluate
    from audiocap.transcribe import load_model

    items = check_items(load_captions_csv(args.captions, args.audio_dir), progress=sys.stderr.isatty())
    pipeline = load_model(args.model, args.device, args.precision)
    predictions = []
    with tqdm(total=len(items), unit="file", desc="captioning", file=sys.stderr) as progress:
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            predictions += pipeline.caption([it.audio_path for it in batch], args.beam, args.batch_size)
            progress.update(len(batch))

    metric_names = {"metrics": args.metrics.split(",")} if args.metrics else {}
    scores = evaluate(predictions, [it.captions for it in items], **metric_names)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption_predicted"])
        writer.writerows((it.key, caption) for it, caption in zip(items, predictions))
    report = {"model": str(args.model or "default"), "captions": str(args.captions), "beam_size": args.beam,
              "precision": pipeline.precision,
              "n_clips": len(items), "scores": scores}
    (args.out / "scores.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, value in scores.items():
        if isinstance(value, (int, float)):
            print(f"{name:>10s}  {value:.4f}")
    print(f"wrote {args.out / 'predictions.csv'} and {args.out / 'scores.json'}", file=sys.stderr)
    return 0
