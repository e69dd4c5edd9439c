"""Caption datasets as plain lists of `CaptionItem`: one audio file and its reference captions.

Three sources, one item type:

* any folder of audio plus a CSV `file_name,caption_1..caption_N` (N >= 1): `load_captions_csv`;
* Clotho v2.1, whose official caption CSVs have exactly that shape (N = 5): `clotho`;
* AudioCaps, one CSV row per caption (`audiocap_id,youtube_id,start_time,caption`), grouped here
  into one item per clip; the audio is the user's own, one file per clip named by youtube id.

`load_dataset(csv, audio_dir)` tells the two CSV shapes apart by their header: training, evaluation,
validation and scoring all read datasets through it.

Loading never opens the audio and keeps every row as written (duplicates and empty captions
included) so that `validate.validate_items` can report them all at once instead of the first
bad row hiding the next ones.
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audiocap.audio import AUDIO_EXTENSIONS
from audiocap.errors import DataError

CLOTHO_SPLITS = ("development", "validation", "evaluation")


@dataclass
class CaptionItem:
    key: str  # unique name of the clip: the CSV's file_name, or the youtube id for AudioCaps; "" if the row has none
    audio_path: Path
    captions: list[str]
    # spreadsheet row number of the item's (first) row, header = 1: error messages point at it
    row: int | None = field(default=None, compare=False)


def read_csv(csv_path: str | os.PathLike, what: str = "captions CSV") -> tuple[list[str], list[dict[str, str]]]:
    """(header columns, rows as dicts) of a UTF-8 CSV, with or without a byte-order mark; every way the
    file can fail to read is a `DataError` naming it (`what` says which file it is in the message)."""
    columns, rows = csv_rows(csv_path, what)
    return columns, list(rows)


def csv_rows(csv_path: str | os.PathLike, what: str = "captions CSV") -> tuple[list[str], Iterator[dict[str, str]]]:
    """`read_csv`, the rows read one by one as they are iterated (a million rows as dicts take gigabytes)."""
    rows = _csv_rows(Path(csv_path), what)
    return next(rows), rows


def _csv_rows(csv_path: Path, what: str) -> Iterator:
    """The header columns, then each row."""
    try:
        # utf-8-sig: CSVs saved by spreadsheet programs often start with a byte-order mark
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            yield list(reader.fieldnames or [])
            yield from reader
    except FileNotFoundError:
        raise DataError(f"{csv_path}: {what} not found; check the path") from None
    except OSError as err:  # a folder, no permission...
        raise DataError(f"{csv_path}: cannot read ({err.strerror}); check the path") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: not a UTF-8 CSV ({err}); re-save it as UTF-8 CSV") from None


def load_captions_csv(csv_path: str | os.PathLike, audio_dir: str | os.PathLike) -> list[CaptionItem]:
    """Items of a CSV with columns `file_name,caption_1..caption_N`, audio at `audio_dir/file_name`."""
    csv_path = Path(csv_path)
    return captions_items(csv_path, Path(audio_dir), *read_csv(csv_path))


def load_dataset(csv_path: str | os.PathLike, audio_dir: str | os.PathLike) -> list[CaptionItem]:
    """A captions CSV (`file_name,caption_1..`) or an AudioCaps CSV (`youtube_id,caption`, one row per
    caption), told apart by its header; audio at `audio_dir`."""
    csv_path, audio_dir = Path(csv_path), Path(audio_dir)
    columns, rows = csv_rows(csv_path)  # read once, by the loaders' own reader, row by row
    loader = audiocaps_items if "youtube_id" in columns else captions_items
    items = loader(csv_path, audio_dir, columns, rows)
    if not items:  # training would fail after its first epoch, evaluation would score nothing
        raise no_rows(csv_path)
    return items


def dataset_captions(csv_path: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    """(clip key, its captions) of each clip of what `load_dataset` reads, without items: scoring needs no
    audio paths, and a million items with theirs take ~0.6 GB. The CSV is read as the clips are iterated."""
    csv_path = Path(csv_path)
    columns, rows = csv_rows(csv_path)
    clips = (_audiocaps_clips if "youtube_id" in columns else _captions_clips)(csv_path, columns, rows)
    return ((key, captions) for key, captions, _ in clips)


def no_rows(csv_path: Path) -> DataError:
    return DataError(f"{csv_path}: no rows below the header; add one row per clip (or point to another CSV)")


def captions_items(csv_path: Path, audio_dir: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> list[CaptionItem]:
    """`load_captions_csv` of a CSV already read by `read_csv` (`csv_path` only names it in errors)."""
    return [CaptionItem(key=key, audio_path=audio_dir / key, captions=captions, row=number)
            for key, captions, number in _captions_clips(csv_path, columns, rows)]


def _captions_clips(csv_path: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> Iterator[tuple[str, list[str], int]]:
    """(file name, captions, row number) of each row; the header is checked at once, the rows as iterated."""
    numbered = {int(m.group(1)): name for name in columns if (m := re.fullmatch(r"caption_(\d+)", name))}
    if "file_name" not in columns or not numbered:
        raise DataError(
            f"{csv_path}: expected columns file_name,caption_1..caption_N, found {','.join(columns) or 'none'}; "
            "rename the header row"
        )
    caption_columns = [numbered[i] for i in sorted(numbered)]
    # A short row leaves its trailing cells as None, file_name too when it is not the first column:
    # keep them as "" so that validation reports the row instead of crashing on it.
    return ((row["file_name"] or "", [(row[c] or "").strip() for c in caption_columns], number)
            for number, row in enumerate(rows, start=2))


def clotho(root: str | os.PathLike, split: str) -> list[CaptionItem]:
    """Clotho v2.1 as laid out by `audiocap download clotho`:
    `root/clotho_captions_<split>.csv` and the audio in `root/audio/<split>/`."""
    if split not in CLOTHO_SPLITS:
        raise DataError(f"unknown Clotho split {split!r}; choose one of: {', '.join(CLOTHO_SPLITS)}")
    root = Path(root)
    return load_captions_csv(root / f"clotho_captions_{split}.csv", root / "audio" / split)


def audiocaps(csv_path: str | os.PathLike, audio_dir: str | os.PathLike) -> list[CaptionItem]:
    """AudioCaps clips with all their captions, in order of first appearance in the CSV.

    The audio of clip `youtube_id` is the file in `audio_dir` whose name without extension is
    the youtube id (any of `audio.AUDIO_EXTENSIONS`); a missing file is given the `.wav` name so that
    validation can report it.
    """
    csv_path = Path(csv_path)
    return audiocaps_items(csv_path, Path(audio_dir), *read_csv(csv_path))


def audiocaps_items(csv_path: Path, audio_dir: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> list[CaptionItem]:
    """`audiocaps` of a CSV already read by `read_csv` (`csv_path` only names it in errors)."""
    clips = _audiocaps_clips(csv_path, columns, rows)
    audio_by_id = _audio_files_by_stem(audio_dir)
    return [CaptionItem(key=yid, audio_path=audio_by_id.get(yid, audio_dir / f"{yid}.wav"), captions=captions, row=row)
            for yid, captions, row in clips]


def _audiocaps_clips(csv_path: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> Iterator[tuple[str, list[str], int]]:
    """(youtube id, its captions, its first row number) of each clip, in order of first appearance."""
    if not {"youtube_id", "caption"} <= set(columns):
        raise DataError(
            f"{csv_path}: expected AudioCaps columns audiocap_id,youtube_id,start_time,caption, "
            f"found {','.join(columns) or 'none'}"
        )
    captions: dict[str, list[str]] = defaultdict(list)  # dicts keep insertion order: CSV order
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        yid = row["youtube_id"] or ""  # None in a short row: validation reports it
        captions[yid].append((row["caption"] or "").strip())
        first_row.setdefault(yid, number)
    return ((yid, caps, first_row[yid]) for yid, caps in captions.items())


def _audio_files_by_stem(audio_dir: Path) -> dict[str, Path]:
    # one directory listing instead of probing every extension for each of ~50k clips
    if not audio_dir.is_dir():
        return {}
    return {
        Path(entry.name).stem: Path(entry.path)
        for entry in os.scandir(audio_dir)
        if entry.name.lower().endswith(AUDIO_EXTENSIONS)
    }
