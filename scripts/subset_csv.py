"""Every k-th row of a captions CSV, for the default model's small-budget ablation.

    python scripts/subset_csv.py data/default/train.csv --every 4 --out data/default/train_every4.csv
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with open(args.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows([rows[0]] + rows[1:][args.every - 1::args.every])


if __name__ == "__main__":
    main()
