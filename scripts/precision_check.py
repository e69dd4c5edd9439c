"""What the decoder precisions of audiocap.quantize cost in caption quality: for each trained run, the
held-out clips of the default dataset are captioned (beam 3, as `audiocap caption` does) with fp32,
fp16 and int8 decoder weights, and each precision's captions are counted against fp32's and scored.

    python scripts/precision_check.py runs/default_aisfx runs/other ... --data data/default

Prints one line per run and precision: identical captions, METEOR, CIDEr-D, source hit.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate_default_model as evaluation  # noqa: E402  (a sibling script)
from default_data import captions as cap  # noqa: E402

import audiocap  # noqa: E402
from audiocap.data.datasets import load_captions_csv  # noqa: E402
from audiocap.metrics import evaluate  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding model.safetensors")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--beam", type=int, default=3)
    args = parser.parse_args(argv)

    items = load_captions_csv(args.data / "heldout.csv", args.data / "audio" / "heldout")
    with open(args.data / "heldout_sources.csv", newline="", encoding="utf-8") as f:
        truth = {row["file_name"]: row["classes"].split(";") for row in csv.DictReader(f)}
    classes = cap.load_classes()
    for run in args.runs:
        captions = {}
        for precision in PRECISIONS:
            model = audiocap.load_model(run / "model.safetensors", precision=precision)
            captions[precision] = model.caption([it.audio_path for it in items], beam_size=args.beam, batch_size=16)
            scores = evaluate(captions[precision], [it.captions for it in items], metrics=["meteor", "cider_d"])
            hits = [bool(evaluation.judge(c, truth[it.key], classes)["named"]) for it, c in zip(items, captions[precision])]
            same = sum(a == b for a, b in zip(captions[precision], captions["fp32"]))
            print(f"{run} {precision} identical_to_fp32={same}/{len(items)} meteor={scores['meteor']:.3f} "
                  f"cider_d={scores['cider_d']:.3f} source_hit={sum(hits) / len(hits):.3f}", flush=True)


if __name__ == "__main__":
    main()
