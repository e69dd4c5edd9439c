"""The default model's ablation table (issue 7): caption metrics and source hit rate on the 100
held-out ESC-50 clips, for each trained run.

    python scripts/ablation.py runs/default_esc50_aisfx runs/ablation_aisfx_no_rlssr ... \\
        --data data/default --out runs/ablation.md

Each run folder holds the `model.safetensors` that `audiocap train` wrote. Captions are made with
beam search (beam 3), exactly as `audiocap caption` makes them; references are the written
captions of `heldout.csv`. The clips whose recording also has takes in training
(`heldout_sharing_recording` in the dataset manifest) are scored with and without them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import source_hit  # noqa: E402  (a sibling script)

METRICS = ["bleu", "meteor", "rouge_l", "cider_d"]
COLUMNS = ["bleu_4", "meteor", "rouge_l", "cider_d", "source_hit"]


def caption_heldout(run: Path, data: Path, beam_size: int) -> tuple[list, list[str]]:
    """The held-out items and the run's captions of them (as `audiocap caption` makes them)."""
    from audiocap.data.datasets import load_captions_csv
    from audiocap.transcribe import load_model

    items = load_captions_csv(data / "heldout.csv", data / "audio" / "heldout")
    predictions = load_model(run / "model.safetensors", precision="fp32").caption(
        [it.audio_path for it in items], beam_size=beam_size, batch_size=16)
    (run / "heldout_predictions.json").write_text(
        json.dumps({it.key: p for it, p in zip(items, predictions)}, indent=1) + "\n")
    return items, predictions


def score(items: list, predictions: list[str], categories: dict[str, str], synonyms: dict,
          exclude: set[str]) -> dict[str, float]:
    from audiocap.metrics import evaluate

    kept = [(it, p) for it, p in zip(items, predictions) if it.key not in exclude]
    scores = evaluate([p for _, p in kept], [it.captions for it, _ in kept], metrics=METRICS)
    scores["source_hit"] = source_hit.source_hit_rate(
        {it.key: p for it, p in kept}, {it.key: categories[it.key] for it, _ in kept}, synonyms)
    return scores


def describe(run: Path) -> tuple[str, str]:
    """(encoder, RLSSR) of a run, read from its model file's training info."""
    from audiocap.model_file import read_model_info

    info = read_model_info(run / "model.safetensors")
    config = info.get("training", {}).get("config", {})
    rlssr = "on (λ={:g})".format(config["rlssr_weight"]) if config.get("rlssr_weight") else "off"
    pretrained = config.get("encoder_options", {}).get("pretrained", True)
    return f"{info['encoder']['name']}, {'pretrained' if pretrained else 'random init'}", rlssr


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding model.safetensors")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)

    shared = set(json.loads((args.data / "manifest.json").read_text())["heldout_sharing_recording"])
    categories = source_hit.read_two_columns(args.data / "heldout_categories.csv", ("category",))
    synonyms = source_hit.load_synonyms()
    lines = ["| encoder | RLSSR | clips | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for run in args.runs:
        encoder, rlssr = describe(run)
        items, predictions = caption_heldout(run, args.data, args.beam)
        for exclude in (set(), shared):
            scores = score(items, predictions, categories, synonyms, exclude)
            cells = " | ".join(f"{scores[c]:.3f}" for c in COLUMNS)
            lines.append(f"| {encoder} | {rlssr} | {len(items) - len(exclude)} | {cells} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
