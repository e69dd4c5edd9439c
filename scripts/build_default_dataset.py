"""Build the training data of the bundled default model (issue 7) from ../shared/data.

    python scripts/build_default_dataset.py --shared ../shared/data --out data/default

Output (Clotho-format CSVs `file_name,caption_1..caption_5`, read with
`audiocap.data.datasets.load_captions_csv(csv, audio_dir)`):

    train.csv              + audio/train/     314 ESC-50 clips, 15 Clotho validation clips, mixtures
    val.csv                + audio/train/     --val-mixtures mixtures kept out of training (model selection)
    heldout.csv            + audio/heldout/   100 ESC-50 clips (2 per category), never trained on
    heldout_categories.csv                    file_name,category for the source hit rate
    mixtures.csv                              how each mixture was made (parts, gain, gap)
    manifest.json                             seed, counts, held-out list, recipe checksums

ESC-50 captions are sampled from the written captions in data_recipes/esc50_captions.csv; the
mixture captions are composed from the clauses in data_recipes/esc50_clauses.yaml. Everything
random derives from --seed, so the same seed and recipes give byte-identical CSVs and audio.
ESC-50 and Clotho audio are symlinked (or copied with --copy-audio) under their own names
(ESC-50 as .flac); mixtures are written as 16-bit WAV at 44.1 kHz.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import random
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "data_recipes"
SAMPLE_RATE = 44100
CAPTIONS_PER_CLIP = 5
HELDOUT_PER_CATEGORY = 2
OVERLAY_SECONDS = 5.0
SEQUENCE_SECONDS = 10.0
TARGET_RMS = 0.1  # -20 dBFS: both parts get the same loudness before the relative gain
PEAK_LIMIT = 0.89  # -1 dBFS: mixtures are scaled down to this peak, never clipped
OVERLAY_GAIN_DB = 6.0  # relative gain of the second part, uniform in [-6, +6] dB
BACKGROUND_DB = 4.0  # a part this much quieter is captioned as "in the background"
SEQUENCE_GAIN_DB = 3.0
SEQUENCE_GAP_S = (0.2, 1.0)
PAUSE_CAPTION_MIN_GAP_S = 0.5  # "after a short pause" only when there is an audible one
OUTPUTS = ("train.csv", "val.csv", "heldout.csv", "heldout_categories.csv", "mixtures.csv", "manifest.json", "audio")


@dataclass(frozen=True)
class Clip:
    file_name: str  # name in the output audio folder (ESC-50: the .flac file)
    category: str
    recording: str  # ESC-50 `src_file`: takes of one Freesound recording share it
    path: Path


@dataclass(frozen=True)
class Phrases:
    """Ways to mention one category inside a composed caption (see esc50_clauses.yaml)."""

    clauses: list[str]
    gerunds: list[str]
    nouns: list[str]


@dataclass
class Mixture:
    file_name: str
    kind: str  # "overlay" | "sequence"
    first: Clip  # overlay: the part the gain is relative to; sequence: the part heard first
    second: Clip
    gain_db: float  # applied to `second` after both are loudness-matched
    gap_s: float = 0.0  # sequence only: silence between the parts (after trimming)
    lead_s: float = 0.0  # sequence only: silence before the first part
    captions: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- recipes


def load_written_captions(path: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions[row["category"]].append(row["caption"].strip())
    return dict(captions)


def load_phrases(path: Path) -> dict[str, Phrases]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    return {category: Phrases(**entry) for category, entry in raw.items()}


def check_recipes(categories: set[str], captions: dict[str, list[str]], phrases: dict[str, Phrases]) -> None:
    """Fail before writing anything if a category lacks captions or clauses."""
    problems = []
    for category in sorted(categories):
        written = captions.get(category, [])
        if len(set(written)) < CAPTIONS_PER_CLIP:
            problems.append(f"{category}: {len(set(written))} distinct captions, need {CAPTIONS_PER_CLIP}")
        entry = phrases.get(category)
        if entry is None or not (entry.clauses and entry.gerunds and entry.nouns):
            problems.append(f"{category}: missing clauses, gerunds or nouns")
    if problems:
        raise SystemExit("recipe problems:\n  " + "\n  ".join(problems))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ ESC-50 split


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


# ------------------------------------------------------------------------- caption composing

# Templates use {a}/{b} clauses, {ga}/{gb} gerunds and {na}/{nb} nouns of the two parts.
SIMULTANEOUS = [
    "{a} while {b}",
    "{a} as {b}",
    "{a} and {b} at the same time",
    "while {a}, {b}",
    "{a}, and meanwhile {b}",
    "{ga} and {gb} can be heard together",
    "{a} over the sound of {gb}",
]
# `b` is the quieter part.
WITH_BACKGROUND = [
    "{a} with {nb} in the background",
    "{a} while {b} in the background",
    "{a}, and {gb} can be heard in the background",
    "{a} as {b} faintly in the background",
    "{a} over the quiet sound of {gb}",
    "in the background {b}, while in the foreground {a}",
]
# `a` is heard first.
ONE_AFTER_ANOTHER = [
    "{a}, then {b}",
    "{a}, followed by {gb}",
    "first {a}, and then {b}",
    "{a}, and after that {b}",
    "{a} before {b}",
    "after {a}, {b}",
    "{na} is followed by {nb}",
]
AFTER_A_PAUSE = [
    "{a}, and after a short pause {b}",
    "{a}; a moment later {b}",
]


_PROGRESSIVE = re.compile(r"\b(is|are) \w+ing\b")
_LOUD = re.compile(r"\bloud")


def pick(options: list[str], rng: random.Random, avoid: re.Pattern | None) -> str:
    allowed = [o for o in options if not (avoid and avoid.search(o))] or options
    return rng.choice(allowed)


def fill(template: str, a: Phrases, b: Phrases, rng: random.Random,
         events: bool = False, b_quiet: bool = False) -> str:
    """Fill a template with phrases of parts `a` and `b`. `events`: the caption narrates one
    event after another, where a progressive clause reads badly ("first a dog barks, and then a
    cow is mooing"). `b_quiet`: `b` is the background, so it must not be described as loud."""
    a_avoid = _PROGRESSIVE if events else None
    b_avoid = _PROGRESSIVE if events else _LOUD if b_quiet else None
    text = template.format(
        a=pick(a.clauses, rng, a_avoid), b=pick(b.clauses, rng, b_avoid),
        ga=pick(a.gerunds, rng, a_avoid), gb=pick(b.gerunds, rng, b_avoid),
        na=pick(a.nouns, rng, a_avoid), nb=pick(b.nouns, rng, b_avoid),
    )
    return text[0].upper() + text[1:] + "."


def compose_captions(mixture: Mixture, phrases: dict[str, Phrases], rng: random.Random) -> list[str]:
    """CAPTIONS_PER_CLIP captions, each from a different template so the connectives vary."""
    first, second = phrases[mixture.first.category], phrases[mixture.second.category]
    if mixture.kind == "sequence":
        templates = ONE_AFTER_ANOTHER + (AFTER_A_PAUSE if mixture.gap_s >= PAUSE_CAPTION_MIN_GAP_S else [])
        return [fill(t, first, second, rng, events=True) for t in rng.sample(templates, CAPTIONS_PER_CLIP)]
    if abs(mixture.gain_db) >= BACKGROUND_DB:
        loud, quiet = (first, second) if mixture.gain_db < 0 else (second, first)
        return [fill(t, loud, quiet, rng, b_quiet=True) for t in rng.sample(WITH_BACKGROUND, CAPTIONS_PER_CLIP)]
    # Comparable loudness: neither part is "background", and either may be named first.
    captions = []
    for template in rng.sample(SIMULTANEOUS, CAPTIONS_PER_CLIP):
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        captions.append(fill(template, a, b, rng))
    return captions


# ------------------------------------------------------------------------------------ audio


def read_mono(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    return audio.mean(axis=1)


def fit_length(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(seconds * SAMPLE_RATE))
    return np.pad(audio[:n], (0, max(0, n - len(audio))))


def frame_rms(audio: np.ndarray, frame: int = 1024) -> np.ndarray:
    usable = len(audio) // frame * frame
    return np.sqrt(np.mean(audio[:usable].reshape(-1, frame) ** 2, axis=1) + 1e-12)


def active_frames(audio: np.ndarray, frame: int = 1024, below_peak_db: float = 40.0) -> np.ndarray:
    """Frames within `below_peak_db` of the loudest one. Many ESC-50 clips are a short event
    padded with digital silence; loudness and trimming should look at the event only."""
    rms = frame_rms(audio, frame)
    return rms >= rms.max() * 10 ** (-below_peak_db / 20)


def match_loudness(audio: np.ndarray) -> np.ndarray:
    rms = frame_rms(audio)[active_frames(audio)]
    return audio * (TARGET_RMS / np.sqrt(np.mean(rms**2)))


def trim_silence(audio: np.ndarray, frame: int = 1024, margin_s: float = 0.05) -> np.ndarray:
    active = np.flatnonzero(active_frames(audio, frame))
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, active[0] * frame - margin)
    end = min(len(audio), (active[-1] + 1) * frame + margin)
    return audio[start:end]


def limit_peak(audio: np.ndarray) -> np.ndarray:
    peak = np.abs(audio).max()
    return audio * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else audio


def render_overlay(mixture: Mixture) -> np.ndarray:
    first = match_loudness(fit_length(read_mono(mixture.first.path), OVERLAY_SECONDS))
    second = match_loudness(fit_length(read_mono(mixture.second.path), OVERLAY_SECONDS))
    return limit_peak(first + second * 10 ** (mixture.gain_db / 20))


def render_sequence(mixture: Mixture, gap_s: float, lead_fraction: float) -> tuple[np.ndarray, float, float]:
    """First part, gap, second part inside SEQUENCE_SECONDS. Parts are trimmed of surrounding
    silence (each is at most 5 s, so both always fit); the gap shrinks if needed, and
    `lead_fraction` of the remaining slack (at most 0.5 s) goes before the first part.
    Returns the audio and the actual gap and lead in seconds."""
    first = trim_silence(match_loudness(read_mono(mixture.first.path)))
    second = trim_silence(match_loudness(read_mono(mixture.second.path))) * 10 ** (mixture.gain_db / 20)
    total = int(round(SEQUENCE_SECONDS * SAMPLE_RATE))
    slack = total - len(first) - len(second)
    gap = min(int(gap_s * SAMPLE_RATE), slack)
    lead = int(lead_fraction * min(slack - gap, SAMPLE_RATE // 2))
    out = np.zeros(total, dtype=np.float32)
    out[lead : lead + len(first)] = first
    start = lead + len(first) + gap
    out[start : start + len(second)] = second
    return limit_peak(out), gap / SAMPLE_RATE, lead / SAMPLE_RATE


# ----------------------------------------------------------------------------------- mixing


def plan_mixtures(train: list[Clip], kind: str, count: int, rng: random.Random) -> list[Mixture]:
    """`count` distinct ordered pairs of training clips from two different categories; the
    categories are drawn uniformly so each appears about equally often."""
    by_category: dict[str, list[Clip]] = defaultdict(list)
    for clip in train:
        by_category[clip.category].append(clip)
    categories = sorted(by_category)
    seen: set[tuple[str, str]] = set()
    mixtures = []
    while len(mixtures) < count:
        cat_a, cat_b = rng.sample(categories, 2)
        first, second = rng.choice(by_category[cat_a]), rng.choice(by_category[cat_b])
        if (first.file_name, second.file_name) in seen:
            continue
        seen.add((first.file_name, second.file_name))
        mixtures.append(Mixture(f"mix_{kind}_{len(mixtures):04d}.wav", kind, first, second, gain_db=0.0))
    return mixtures


def build_mixture(mixture: Mixture, phrases: dict[str, Phrases], seed: int, out_dir: Path) -> None:
    # A per-mixture generator keeps each mixture reproducible on its own, whatever the counts.
    rng = random.Random(f"{seed}/{mixture.file_name}")
    if mixture.kind == "overlay":
        mixture.gain_db = round(rng.uniform(-OVERLAY_GAIN_DB, OVERLAY_GAIN_DB), 2)
        audio = render_overlay(mixture)
    else:
        mixture.gain_db = round(rng.uniform(-SEQUENCE_GAIN_DB, SEQUENCE_GAIN_DB), 2)
        audio, mixture.gap_s, mixture.lead_s = render_sequence(
            mixture, gap_s=rng.uniform(*SEQUENCE_GAP_S), lead_fraction=rng.random()
        )
    sf.write(out_dir / mixture.file_name, audio, SAMPLE_RATE, subtype="PCM_16")
    mixture.captions = compose_captions(mixture, phrases, rng)


# ----------------------------------------------------------------------------------- output


def prepare_out_dir(out: Path) -> None:
    """Refuse to write into a non-empty folder this script did not make; clear one it did."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise SystemExit(f"{out} is not empty and has no manifest.json; choose an empty --out")
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    (out / "audio" / "train").mkdir(parents=True, exist_ok=True)
    (out / "audio" / "heldout").mkdir(parents=True, exist_ok=True)


def place_audio(source: Path, dest: Path, copy: bool) -> None:
    if copy:
        shutil.copyfile(source, dest)
    else:
        dest.symlink_to(source.resolve())


def write_captions_csv(path: Path, rows: list[tuple[str, list[str]]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file_name"] + [f"caption_{i + 1}" for i in range(CAPTIONS_PER_CLIP)])
        for file_name, captions in rows:
            writer.writerow([file_name, *captions])


def load_clotho_validation(clotho_root: Path) -> list[tuple[Path, list[str]]]:
    """The Clotho validation clips that have their audio here (the shared data holds 15), with their captions."""
    from audiocap.data.datasets import clotho

    items = [it for it in clotho(clotho_root, "validation") if it.audio_path.is_file()]
    return [(it.audio_path, it.captions) for it in sorted(items, key=lambda it: it.audio_path.name)]


def build(shared: Path, out: Path, seed: int = 0, overlays: int = 150, sequences: int = 150,
          copy_audio: bool = False, recipes: Path = RECIPES, val_mixtures: int = 60) -> dict:
    """Build the dataset into `out` and return the manifest."""
    started = time.monotonic()
    captions_csv, clauses_yaml = recipes / "esc50_captions.csv", recipes / "esc50_clauses.yaml"
    written, phrases = load_written_captions(captions_csv), load_phrases(clauses_yaml)
    clips = load_esc50(shared / "esc50")
    check_recipes({c.category for c in clips}, written, phrases)
    clotho = load_clotho_validation(shared / "clotho")

    # One generator per decision, so e.g. changing the number of mixtures leaves the split and
    # the sampled ESC-50 captions unchanged.
    heldout = sorted(choose_heldout(clips, random.Random(f"{seed}/split")), key=lambda c: c.file_name)
    heldout_names = {c.file_name for c in heldout}
    train = [c for c in clips if c.file_name not in heldout_names]
    mixtures = (plan_mixtures(train, "overlay", overlays, random.Random(f"{seed}/overlay"))
                + plan_mixtures(train, "sequence", sequences, random.Random(f"{seed}/sequence")))
    caption_rng = random.Random(f"{seed}/captions")

    prepare_out_dir(out)
    train_dir, heldout_dir = out / "audio" / "train", out / "audio" / "heldout"
    train_rows: list[tuple[str, list[str]]] = []
    for clip in train:
        place_audio(clip.path, train_dir / clip.file_name, copy_audio)
        train_rows.append((clip.file_name, caption_rng.sample(written[clip.category], CAPTIONS_PER_CLIP)))
    for path, captions in clotho:
        place_audio(path, train_dir / path.name, copy_audio)
        train_rows.append((path.name, captions))
    heldout_rows = []
    for clip in heldout:
        place_audio(clip.path, heldout_dir / clip.file_name, copy_audio)
        heldout_rows.append((clip.file_name, caption_rng.sample(written[clip.category], CAPTIONS_PER_CLIP)))

    # Model selection needs a validation set that is not the held-out evaluation set: every
    # k-th mixture (new combinations of training clips) is kept out of training for it.
    val_rows: list[tuple[str, list[str]]] = []
    val_every = max(1, len(mixtures) // val_mixtures) if val_mixtures else 0
    for i, mixture in enumerate(mixtures, 1):
        build_mixture(mixture, phrases, seed, train_dir)
        rows = val_rows if val_every and i % val_every == 0 and len(val_rows) < val_mixtures else train_rows
        rows.append((mixture.file_name, mixture.captions))
        if i % 200 == 0 or i == len(mixtures):
            print(f"mixtures {i}/{len(mixtures)}", flush=True)

    write_captions_csv(out / "train.csv", train_rows)
    write_captions_csv(out / "val.csv", val_rows)
    write_captions_csv(out / "heldout.csv", heldout_rows)
    with open(out / "heldout_categories.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file_name", "category"])
        writer.writerows((c.file_name, c.category) for c in heldout)
    with open(out / "mixtures.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file_name", "kind", "first", "second", "first_category", "second_category",
                         "second_gain_db", "gap_s", "lead_s"])
        writer.writerows(
            (m.file_name, m.kind, m.first.file_name, m.second.file_name, m.first.category, m.second.category,
             f"{m.gain_db:.2f}", f"{m.gap_s:.3f}", f"{m.lead_s:.3f}")
            for m in mixtures
        )

    manifest = {
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "captions_per_clip": CAPTIONS_PER_CLIP,
        "audio": {"train": "audio/train", "heldout": "audio/heldout", "esc50_clips": "copied" if copy_audio else "symlinked"},
        "counts": {
            "train_rows": len(train_rows),
            "train_esc50": len(train),
            "train_clotho_validation": len(clotho),
            "mixtures": overlays + sequences,
            "val_mixtures": len(val_rows),
            "heldout": len(heldout),
            "categories": len({c.category for c in clips}),
        },
        "heldout": [c.file_name for c in heldout],
        # Takes of a recording with training takes too (categories where the split could not
        # avoid it); report the evaluation with and without them.
        "heldout_sharing_recording": heldout_sharing_recording(heldout, train),
        "recipes": {p.name: sha256(p) for p in (captions_csv, clauses_yaml)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out}: {len(train_rows)} training rows, {len(heldout)} held-out clips "
          f"in {time.monotonic() - started:.0f} s")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("data/default"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlays", type=int, default=150, help="number of overlaid mixtures")
    parser.add_argument("--sequences", type=int, default=150, help="number of one-after-another mixtures")
    parser.add_argument("--val-mixtures", type=int, default=60, help="mixtures kept out of training for validation")
    parser.add_argument("--copy-audio", action="store_true", help="copy ESC-50/Clotho audio instead of symlinking")
    args = parser.parse_args(argv)
    build(args.shared, args.out, args.seed, args.overlays, args.sequences, args.copy_audio,
          val_mixtures=args.val_mixtures)


if __name__ == "__main__":
    main()
