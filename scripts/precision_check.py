"""What the decoder precisions of audiocap.quantize cost in caption quality: for each trained run, the
100 held-out ESC-50 clips are captioned (beam 3, as `audiocap caption` does) with fp32, fp16 and int8
decoder weights, and each precision's captions are counted against fp32's and scored.

    python scripts/precision_check.py runs/default_esc50_aisfx runs/lambda0_seed1 ... --data data/default

Prints one line per run and precision: identical captions, BLEU-4, METEOR, ROUGE-L, CIDEr-D, source hit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation  # noqa: E402  (sibling scripts)
import source_hit  # noqa: E402

PRECISIONS = ("fp32", "fp16", "int8")


def main(argv: list[str] | None = None) -> None:
    from audiocap.data.datasets import load_captions_csv
    from audiocap.transcribe import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding model.safetensors")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--beam", type=int, default=3)
    args = parser.parse_args(argv)

    items = load_captions_csv(args.data / "heldout.csv", args.data / "audio" / "heldout")
    categories = source_hit.read_two_columns(args.data / "heldout_categories.csv", ("category",))
    synonyms = source_hit.load_synonyms()
    for run in args.runs:
        captions = {}
        for precision in PRECISIONS:
            model = load_model(run / "model.safetensors", precision=precision)
            captions[precision] = model.caption([it.audio_path for it in items], beam_size=args.beam, batch_size=16)
            scores = ablation.score(items, captions[precision], categories, synonyms, exclude=set())
            same = sum(a == b for a, b in zip(captions[precision], captions["fp32"]))
            cells = " ".join(f"{c}={scores[c]:.3f}" for c in ablation.COLUMNS)
            print(f"{run} {precision} identical_to_fp32={same}/{len(items)} {cells}", flush=True)


if __name__ == "__main__":
    main()
