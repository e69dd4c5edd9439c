"""ESC-50 in ../shared/data/esc50: its clips, and which of them are held out for evaluation."""
from __future__ import annotations

import csv
import itertools
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HELDOUT_PER_CATEGORY = 2


@dataclass(frozen=True)
class Clip:
    file_name: str  # name in the output audio folder (ESC-50: the .flac file)
    category: str
    recording: str  # ESC-50 `src_file`: takes of one Freesound recording share it
    path: Path


def load_esc50(esc50_root: Path) -> list[Clip]:
    clips = []
    with open(esc50_root / "meta" / "esc50.csv", newline="") as f:
        for row in csv.DictReader(f):
            # The metadata keeps the original .wav names; the audio was re-encoded to FLAC.
            path = esc50_root / "audio" / Path(row["filename"]).with_suffix(".flac").name
            if not path.is_file():
                raise SystemExit(f"missing ESC-50 audio {path}")
            clips.append(Clip(path.name, row["category"], row["src_file"], path))
    return sorted(clips, key=lambda c: c.file_name)


def choose_heldout(clips: list[Clip], rng: random.Random) -> list[Clip]:
    """Exactly two clips per category, preferring choices that hold out whole recordings:
    several ESC-50 clips are takes of one Freesound recording, and a held-out take whose sibling
    is trained on would flatter the evaluation. The options per category are a recording with
    exactly two takes or two single-take recordings. Only where neither exists (fireworks and
    washing_machine here: all takes come from larger recordings) are two takes of the smallest
    recording held out; `heldout_sharing_recording` lists them."""
    by_category: dict[str, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        by_category[clip.category][clip.recording].append(clip)

    heldout = []
    for category in sorted(by_category):
        recordings = [sorted(takes, key=lambda c: c.file_name) for _, takes in sorted(by_category[category].items())]
        singles = [takes[0] for takes in recordings if len(takes) == 1]
        options = [takes for takes in recordings if len(takes) == HELDOUT_PER_CATEGORY]
        options += [list(pair) for pair in itertools.combinations(singles, HELDOUT_PER_CATEGORY)]
        if options:
            heldout += rng.choice(options)
        else:
            smallest = min(len(takes) for takes in recordings)
            heldout += rng.choice([t for t in recordings if len(t) == smallest])[:HELDOUT_PER_CATEGORY]
    return heldout


def heldout_sharing_recording(heldout: list[Clip], train: list[Clip]) -> list[str]:
    train_recordings = {clip.recording for clip in train}
    return sorted(clip.file_name for clip in heldout if clip.recording in train_recordings)
