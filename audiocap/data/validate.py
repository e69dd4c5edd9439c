"""Check a dataset before training: every row's audio exists and decodes, no duplicate rows, no
empty captions. All problems are collected and reported together, with counts, so one run of
`audiocap validate` shows everything to fix instead of failing on the first bad file.

Training calls `check_items(items, skip_bad, skip_hint=...)`: it refuses to start on a bad dataset
unless told to skip the bad rows, in which case it trains on `Report.usable(items)`.
"""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from audiocap.audio import scan_audio
from audiocap.data.datasets import CaptionItem
from audiocap.errors import AudioLoadError, DataError


MAX_LISTED = 10  # problems of each kind listed in an error or warning of train/evaluate


@dataclass
class Report:
    n_items: int
    no_key: list[CaptionItem] = field(default_factory=list)  # rows whose file_name (youtube_id) is empty
    missing: list[CaptionItem] = field(default_factory=list)
    corrupt: list[tuple[CaptionItem, str]] = field(default_factory=list)  # (item, why it does not decode)
    duplicates: dict[str, int] = field(default_factory=dict)  # key -> number of rows with it
    empty_captions: list[tuple[CaptionItem, list[int]]] = field(default_factory=list)  # 1-based caption numbers

    @property
    def ok(self) -> bool:
        return not (self.no_key or self.missing or self.corrupt or self.duplicates or self.empty_captions)

    def summary(self, max_listed: int | None = None) -> str:
        """The counts, then one line per problem: all of them, or at most `max_listed` of each kind
        (an error message of train/evaluate; a thousand missing files would bury the counts and the fix)."""
        lines = [f"{self.n_items} items: {len(self.missing)} missing audio, {len(self.corrupt)} corrupt audio, "
                 f"{len(self.duplicates)} duplicated keys, {len(self.empty_captions)} with empty captions"
                 + (f", {len(self.no_key)} without a file name" if self.no_key else "")]
        kinds = [
            ("rows without a file name", [f"  no file name: row {item.row or '?'} (file_name or youtube_id cell is "
                                          "empty or missing)" for item in self.no_key]),
            ("missing audio", [f"  missing audio: {item.key} (expected at {item.audio_path})" for item in self.missing]),
            ("corrupt audio", [f"  corrupt audio: {item.key} ({reason})" for item, reason in self.corrupt]),
            ("duplicates", [f"  duplicate: {key} appears in {n} rows" for key, n in self.duplicates.items()]),
            ("empty captions", [f"  empty captions: {item.key} caption(s) {', '.join(map(str, numbers))}"
                                for item, numbers in self.empty_captions]),
        ]
        for kind, problems in kinds:
            lines += problems[:max_listed]
            if max_listed is not None and len(problems) > max_listed:
                lines.append(f"  ... and {len(problems) - max_listed} more {kind} (`audiocap validate` lists all)")
        return "\n".join(lines)

    def usable(self, items: list[CaptionItem]) -> list[CaptionItem]:
        """What training can use: rows with readable audio, the first row of each duplicated key,
        and only the non-empty captions (a row left with none is dropped)."""
        bad = {id(item) for item in self.missing + self.no_key} | {id(item) for item, _ in self.corrupt}
        seen: set[str] = set()
        kept = []
        for item in items:
            captions = [c for c in item.captions if c]
            if id(item) in bad or item.key in seen or not captions:
                continue
            seen.add(item.key)
            kept.append(CaptionItem(item.key, item.audio_path, captions, item.row))
        return kept


def decode_problem(path: Path) -> str | None:
    """Why `path` does not decode to audio, or None if it does (the whole file is decoded:
    a truncated file often has a valid header)."""
    try:  # block by block: a long recording is checked without holding it (samples too: NaN, 1e17 ...)
        if scan_audio(path) == 0:
            return f"{path}: no audio samples"
    except AudioLoadError as err:
        return str(err)
    return None


def validate_items(items: list[CaptionItem], progress: bool = False, workers: int = 4,
                   decoded: Set[Path] = frozenset()) -> Report:
    """`decoded`: audio paths known to decode (e.g. their frames are in the feature cache), not decoded again."""
    report = Report(n_items=len(items))
    report.no_key = [item for item in items if not item.key]
    items = [item for item in items if item.key]  # reported once, not again as missing audio
    counts = Counter(item.key for item in items)
    report.duplicates = {key: n for key, n in counts.items() if n > 1}
    for item in items:
        if numbers := [i for i, caption in enumerate(item.captions, 1) if not caption.strip()]:
            report.empty_captions.append((item, numbers))
    present = []
    for item in items:
        if not item.audio_path.is_file():
            report.missing.append(item)
        elif item.audio_path not in decoded:
            present.append(item)
    # libsndfile releases the GIL, so threads overlap disk reads and decoding
    with ThreadPoolExecutor(workers) as pool:
        problems = pool.map(decode_problem, [item.audio_path for item in present])
        for item, problem in tqdm(zip(present, problems), total=len(present), desc="decoding audio",
                                  unit="file", disable=not progress):
            if problem:
                report.corrupt.append((item, problem))
    return report


def check_items(items: list[CaptionItem], skip_bad: bool = False, progress: bool = True,
                decoded: Set[Path] = frozenset(), skip_hint: str | None = None) -> list[CaptionItem]:
    """The items to train on or evaluate: all of them if valid; else the usable ones if `skip_bad` (raise if
    none is), else raise.

    `skip_hint` is how the caller's user asks to skip bad rows (e.g. "skip_bad_items=true"); the
    error offers it as the alternative to fixing the data, and offers nothing when there is none."""
    report = validate_items(items, progress=progress, decoded=decoded)
    if report.ok:
        return items
    if not skip_bad:
        alternative = f", or use {skip_hint} to skip the bad rows" if skip_hint else ""
        raise DataError(f"dataset has problems; fix them{alternative}\n{report.summary(MAX_LISTED)}")
    usable = report.usable(items)
    if not usable:  # training would divide by zero tokens, evaluation would score nothing
        raise DataError(f"dataset has no usable rows: every row is bad; fix them\n{report.summary(MAX_LISTED)}")
    print(f"warning: skipping bad rows, using {len(usable)} of {len(items)} items\n{report.summary(MAX_LISTED)}",
          file=sys.stderr)
    return usable
