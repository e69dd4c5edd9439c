"""Evaluate default-model candidates on held-out data only (issue 16).

    python scripts/evaluate_default_model.py runs/default_aisfx [runs/other ...] --data data/default \\
        --previous previous_model.safetensors --out runs/evaluation.json

1. Held-out single sources and mixtures (data/default/heldout.csv: recordings and speakers never
   trained on): the source hit rate per category (the caption names the clip's source, by the
   words of data_recipes/everyday_classes.yaml and source_synonyms.yaml), the share of captions
   that name a source not in the clip ("invented"), and for mixtures the share naming both parts.
2. The 17 Clotho validation clips with 5 human captions each (15 in ../shared/data, 2 fetched
   from mumbert/automatic-audio-captioning): MiniLM similarity, METEOR and CIDEr-D of each model,
   of the previous bundled model, of the best fixed sentence for those references (chosen among
   all AudioCaps-train and Clotho-development captions), and of one human caption against the
   other four (mean of the 5 rounds).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_data import captions as cap  # noqa: E402
from default_data import sources  # noqa: E402
import source_hit  # noqa: E402  (a sibling script: whole-word matching)

import audiocap  # noqa: E402
from audiocap.data.datasets import load_captions_csv  # noqa: E402
from audiocap.metrics import evaluate  # noqa: E402
from audiocap.metrics.minilm_sim import load_minilm, minilm_similarity  # noqa: E402

CLOTHO_METRICS = ["meteor", "cider_d"]
# Words too generic to count as inventing a source ("water" in a rain caption, "people" in a crowd).
GENERIC = {"water", "people", "voice", "voices", "machine", "appliance", "board", "bag", "paper", "door", "doors",
           "slam", "slams", "rings", "ringing", "words", "note", "notes", "fan", "car", "engine", "drill", "drilling"}
BASELINE_SENTENCE = "a man speaks while a vehicle engine runs and birds chirp"
WRITTEN_CAPTIONS = cap.load_written_captions(cap.RECIPES / "esc50_captions.csv")  # ESC-50 class -> captions


def named_words(caption: str, words: list[str]) -> set[str]:
    text = source_hit.normalize_words(caption)
    return {w for w in words if source_hit.normalize_words(w) in text}


def judge(caption: str, true_classes: list[str], classes: dict) -> dict:
    """Which of the clip's classes the caption names, and which other sources it names. A word of
    another class is not an invention when the clip's own classes' captions use it (their phrases,
    and for ESC-50 classes the captions written for them): "a rooster crows", "children shout and
    laugh", "a gun fires", "a chainsaw engine sputters and screams" describe the labelled source."""
    true_words = {w for c in true_classes for w in classes[c].words}
    own_text = " ".join(" ".join(classes[c].clauses + classes[c].gerunds + classes[c].nouns + WRITTEN_CAPTIONS.get(c, []))
                        for c in true_classes)
    own_words = set(source_hit.normalize_words(own_text).split())
    named = [c for c in true_classes if named_words(caption, classes[c].words)]
    invented = set()
    for name, cls in classes.items():
        if name not in true_classes:
            invented |= named_words(caption, cls.words) - true_words - GENERIC
    invented = {w for w in invented if not set(source_hit.normalize_words(w).split()) <= own_words}
    return {"named": named, "invented": sorted(invented)}


def single_source_classes(shared: Path, source_lists: Path) -> dict[str, str]:
    """File name of a single-source clip -> its class (through the source lists and ESC-50's metadata)."""
    with open(shared / "esc50" / "meta" / "esc50.csv", newline="") as f:
        names = {Path(row["filename"]).with_suffix(".flac").name: row["category"] for row in csv.DictReader(f)}
    return names | {clip.name: clip.cls for clip in sources.load_source_clips(source_lists, cap.load_instruments())}


def training_classes(data: Path, shared: Path, source_lists: Path) -> set[str]:
    """The classes of the single-source training clips."""
    names = single_source_classes(shared, source_lists)
    train = load_captions_csv(data / "train.csv", data / "audio" / "train")
    return {names[it.key] for it in train if it.key in names}


def heldout_report(predictions: dict[str, str], data: Path, classes: dict, trained: set[str]) -> dict:
    """Rates on held-out clips of trained classes; clips of a class with no training clip (a
    Berklee name whose every take was held out) are counted apart as `unseen_class`."""
    with open(data / "heldout_sources.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_category, report = defaultdict(list), {"single": defaultdict(list), "mixture": defaultdict(list),
                                              "unseen_class": defaultdict(list)}
    for row in rows:
        true = row["classes"].split(";")
        verdict = judge(predictions[row["file_name"]], true, classes)
        kind = "unseen_class" if set(true) - trained else "single" if row["kind"] == "single" else "mixture"
        report[kind]["hit"].append(bool(verdict["named"]))
        report[kind]["all_named"].append(len(verdict["named"]) == len(true))
        report[kind]["invented"].append(bool(verdict["invented"]))
        if kind == "single":
            by_category[row["categories"]].append(bool(verdict["named"]))
    summary = {kind: {k: float(np.mean(v)) for k, v in stats.items()} | {"clips": len(stats["hit"])}
               for kind, stats in report.items()}
    summary["single_by_category"] = {c: {"hit": float(np.mean(v)), "clips": len(v)} for c, v in sorted(by_category.items())}
    return summary


def clotho_clips(shared: Path, source_lists: Path, mirrors: Path, raw: Path) -> list:
    """The 17 Clotho validation clips with audio here, with their 5 captions."""
    items = {it.key: it for it in load_captions_csv(shared / "clotho" / "clotho_captions_validation.csv",
                                                   shared / "clotho" / "audio" / "validation")}
    present = [it for it in items.values() if it.audio_path.is_file()]
    repo, commit, rows = sources.read_list(source_lists / "mumbert+automatic-audio-captioning.tsv")
    for row in rows:
        name = row["label"].split(":", 2)[2]
        if name in items and not items[name].audio_path.is_file() and name not in {it.key for it in present}:
            part = sources.Part(repo, commit, row["path"], row["blob"])
            path = sources.extract_parts([part], mirrors, raw)[part]
            present.append(type(items[name])(name, path, items[name].captions))
    return sorted(present, key=lambda it: it.key)


def scores(candidates: list[str], references: list[list[str]], sentence_model) -> dict:
    result = evaluate(candidates, references, metrics=CLOTHO_METRICS)
    result["minilm_sim"] = minilm_similarity(candidates, references, sentence_model)[0]
    return {k: round(float(v), 4) for k, v in result.items()}


def best_fixed_sentence(references: list[list[str]], pool: list[str], sentence_model) -> str:
    """The pool sentence with the highest mean per-clip MiniLM similarity to these references:
    per clip the mean cosine to its references, so the best sentence maximises the dot product
    with the clip-averaged mean reference embedding."""
    refs = [sentence_model.encode(r, normalize_embeddings=True, convert_to_numpy=True).mean(axis=0) for r in references]
    target = np.mean(refs, axis=0)
    embeddings = sentence_model.encode(pool, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    return pool[int(np.argmax(embeddings @ target))]


def caption_pool(shared: Path) -> list[str]:
    pool = set()
    with open(shared / "audiocaps" / "train.csv", newline="", encoding="utf-8") as f:
        pool |= {row["caption"].strip() for row in csv.DictReader(f)}
    with open(shared / "clotho" / "clotho_captions_development.csv", newline="", encoding="utf-8") as f:
        pool |= {row[f"caption_{i}"].strip() for row in csv.DictReader(f) for i in range(1, 6)}
    return sorted(pool)


def human_leave_one_out(references: list[list[str]], sentence_model) -> dict:
    rounds = [scores([r[k] for r in references], [r[:k] + r[k + 1:] for r in references], sentence_model)
              for k in range(5)]
    return {key: round(float(np.mean([r[key] for r in rounds])), 4) for key in rounds[0]}


def caption_with(model_path: Path, paths: list[Path]) -> list[str]:
    return audiocap.load_model(model_path, precision="fp32").caption(paths, beam_size=3, batch_size=16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with model.safetensors) or model files")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sources", type=Path, default=Path("../shared/sources"), help="the source lists (*.tsv)")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--previous", type=Path, help="the previous bundled model, for the Clotho comparison")
    parser.add_argument("--out", type=Path, default=Path("runs/evaluation.json"))
    parser.add_argument("--fixed-sentence", help="the best fixed sentence found by an earlier run (skips the search "
                                                 "over ~69k pool captions, minutes of CPU)")
    args = parser.parse_args(argv)

    classes = cap.load_classes()
    trained = training_classes(args.data, args.shared, args.sources)
    heldout = load_captions_csv(args.data / "heldout.csv", args.data / "audio" / "heldout")
    clotho = clotho_clips(args.shared, args.sources, args.mirrors, args.data / "raw")
    references = [it.captions for it in clotho]
    sentence_model = load_minilm()
    fixed = args.fixed_sentence or best_fixed_sentence(references, caption_pool(args.shared), sentence_model)
    report = {"clotho_clips": len(clotho), "best_fixed_sentence": fixed, "clotho": {
        "human (leave one out)": human_leave_one_out(references, sentence_model),
        f"fixed: {fixed}": scores([fixed] * len(clotho), references, sentence_model),
        f"fixed: {BASELINE_SENTENCE}": scores([BASELINE_SENTENCE] * len(clotho), references, sentence_model)}}
    models = [(str(run), run / "model.safetensors" if run.is_dir() else run) for run in args.runs]
    models += [("previous bundled model", args.previous)] if args.previous else []
    for name, path in models:
        predictions = caption_with(path, [it.audio_path for it in clotho])
        report["clotho"][name] = scores(predictions, references, sentence_model)
        report.setdefault("clotho_captions", {})[name] = dict(zip([it.key for it in clotho], predictions))
        if name != "previous bundled model":
            captions = dict(zip([it.key for it in heldout], caption_with(path, [it.audio_path for it in heldout])))
            report.setdefault("heldout", {})[name] = heldout_report(captions, args.data, classes, trained)
            (path.parent / "heldout_predictions.json").write_text(json.dumps(captions, indent=1) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "clotho_captions"}, indent=1))
    print(summary_table(report))


def summary_table(report: dict) -> str:
    """One markdown row per model: held-out single sources and mixtures, and the Clotho clips."""
    lines = ["| model | singles: names the source | singles: invents | mixtures: names both | mixtures: invents "
             "| Clotho MiniLM | Clotho METEOR | Clotho CIDEr-D |", "|---|---|---|---|---|---|---|---|"]
    for name, clotho in report["clotho"].items():
        held = report.get("heldout", {}).get(name)
        cells = ([f"{held['single']['hit']:.3f}", f"{held['single']['invented']:.3f}",
                  f"{held['mixture']['all_named']:.3f}", f"{held['mixture']['invented']:.3f}"]
                 if held else ["—"] * 4)
        cells += [f"{clotho['minilm_sim']:.3f}", f"{clotho['meteor']:.3f}", f"{clotho['cider_d']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
