"""Source hit rate: the share of predicted captions that name their clip's sound source.

A caption "names the source" when it contains, as whole words, one of the entries listed for
the clip's category in a synonyms file (data_recipes/source_synonyms.yaml). It complements the
n-gram metrics for the ablation on the held-out ESC-50 clips: "a dog barks" for a dog clip is a
hit whatever the written references say about the setting.

    python scripts/source_hit.py --predictions preds.csv \\
        --categories data/default/heldout_categories.csv [--per-category]

`preds.csv` has columns `file_name` and `caption` (or `caption_predicted`).
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import yaml

DEFAULT_SYNONYMS = Path(__file__).resolve().parents[1] / "data_recipes" / "source_synonyms.yaml"

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize_words(text: str) -> str:
    """Lower-case, drop apostrophes ("dog's" -> "dogs"), and turn every other non-alphanumeric
    run into one space; the result is padded with spaces so that `f" {phrase} " in result`
    is a whole-word (or whole-phrase) test."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return f" {_NON_WORD.sub(' ', text).strip()} "


def load_synonyms(path: Path = DEFAULT_SYNONYMS) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
        raise ValueError(f"{path}: expected a mapping category -> non-empty list of words")
    return {str(category): [str(word) for word in words] for category, words in raw.items()}


def names_source(caption: str, category: str, synonyms: dict[str, list[str]]) -> bool:
    words = normalize_words(caption)
    return any(normalize_words(entry) in words for entry in synonyms[category])


def source_hits(
    predictions: dict[str, str], categories: dict[str, str], synonyms: dict[str, list[str]]
) -> dict[str, bool]:
    """Hit or miss for every clip in `categories` (the evaluation set). A clip without a
    prediction, or a category without synonyms, is an error rather than a silent miss."""
    missing = sorted(set(categories) - set(predictions))
    if missing:
        raise KeyError(f"{len(missing)} clips have no prediction, e.g. {missing[:3]}")
    unknown = sorted(set(categories.values()) - set(synonyms))
    if unknown:
        raise KeyError(f"no synonyms for categories {unknown}")
    return {name: names_source(predictions[name], category, synonyms) for name, category in categories.items()}


def source_hit_rate(
    predictions: dict[str, str], categories: dict[str, str], synonyms: dict[str, list[str]]
) -> float:
    """Share of the clips in `categories` whose predicted caption names the clip's source.
    Predictions for clips outside `categories` are ignored."""
    if not categories:
        raise ValueError("no clips to score")
    hits = source_hits(predictions, categories, synonyms)
    return sum(hits.values()) / len(hits)


def per_category_rate(hits: dict[str, bool], categories: dict[str, str]) -> dict[str, float]:
    by_category: dict[str, list[bool]] = defaultdict(list)
    for name, hit in hits.items():
        by_category[categories[name]].append(hit)
    return {category: sum(h) / len(h) for category, h in sorted(by_category.items())}


def read_two_columns(path: Path, value_columns: tuple[str, ...]) -> dict[str, str]:
    """`file_name` -> the first of `value_columns` present in the CSV header."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        column = next((c for c in value_columns if c in (reader.fieldnames or [])), None)
        if column is None or "file_name" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns file_name and one of {list(value_columns)}")
        return {row["file_name"]: row[column] for row in reader}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=Path, required=True, help="CSV file_name,caption")
    parser.add_argument("--categories", type=Path, required=True, help="CSV file_name,category")
    parser.add_argument("--synonyms", type=Path, default=DEFAULT_SYNONYMS)
    parser.add_argument("--per-category", action="store_true", help="also print the rate per category")
    args = parser.parse_args(argv)

    predictions = read_two_columns(args.predictions, ("caption", "caption_predicted"))
    categories = read_two_columns(args.categories, ("category",))
    hits = source_hits(predictions, categories, load_synonyms(args.synonyms))
    if args.per_category:
        for category, rate in per_category_rate(hits, categories).items():
            print(f"{category:20s} {rate:.2f}")
    print(f"source_hit_rate {sum(hits.values()) / len(hits):.4f} ({sum(hits.values())}/{len(hits)} clips)")


if __name__ == "__main__":
    main()
