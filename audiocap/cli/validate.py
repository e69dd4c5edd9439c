"""`audiocap validate CSV --audio-dir DIR`: every problem of a dataset at once (audiocap.data.validate)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from audiocap.cli.args import positive_int


def configure_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", type=Path, help="captions CSV (file_name,caption_1..N) or AudioCaps CSV")
    parser.add_argument("--audio-dir", type=Path, help="folder of the audio files (default: the CSV's folder)")
    parser.add_argument("--workers", type=positive_int(), default=min(8, os.cpu_count() or 1), help="decoding threads")


def run_validate(args: argparse.Namespace) -> int:
    from audiocap.data.datasets import load_dataset
    from audiocap.data.validate import validate_items

    items = load_dataset(args.csv, args.audio_dir or args.csv.parent)
    report = validate_items(items, progress=sys.stderr.isatty(), workers=args.workers)
    print(report.summary())
    return 0 if report.ok else 1
