"""Argument types and checks shared by the sub-commands: a bad value fails with the option's name before
any model or data loads."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from audiocap.errors import AudiocapError, MetricError


def positive_int(maximum: int | None = None):
    """An argparse `type` for counts (beam size, batch size, workers, top-k): a whole number from 1 to
    `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < 1 or (maximum is not None and value > maximum):
            limit = f"from 1 to {maximum}" if maximum is not None else "of at least 1"
            raise argparse.ArgumentTypeError(f"expected a whole number {limit}, not {text!r}")
        return value

    return parse


def metric_list(text: str) -> list[str]:
    """An argparse `type` for `--metrics bleu,cider_d` (audiocap.metrics.metric_names)."""
    from audiocap.metrics import metric_names  # numpy and the metric modules: only for commands that score

    try:
        return metric_names(text)
    except MetricError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_output_folder(folder: Path, option: str) -> None:
    """`folder` must be, or be creatable as, a writable folder: found before the long work, not after it."""
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        where = "" if existing == folder else f" (its parent {existing} is a file)"
        raise AudiocapError(f"{option} {folder}: not a folder{where}; give a folder path")
    if not os.access(existing, os.W_OK):
        raise AudiocapError(f"{option} {folder}: {existing} is not writable; give another folder")
