"""Build the training data of the bundled default model: everyday recordings and their mixtures.

    python scripts/build_default_dataset.py --shared ../shared/data --sources ../shared/sources \\
        --mirrors /work/.mirror --out data/default

Sources: ESC-50 (../shared/data/esc50) and the labelled recordings listed in
../shared/sources/*.tsv (UrbanSound8K, LibriSpeech, phone speech, spoken digits, RAVDESS
singing, Philharmonia notes, the Berklee library, office events, crying infants, coughs), each
read from its repository at the listed commit (`fetch`ed under --mirrors) and named
`OWNER/NAME@COMMIT:path` in sources.csv. Without --sources only ESC-50 is used.

Output (Clotho-format CSVs `file_name,caption_1..caption_5`):

    train.csv    + audio/train/     single sources and mixtures made of training clips: two sources
                                    at once or in turn, speech over a background, crowds of several
                                    voices, and 10-20 s scenes (one event over an ambience)
    val.csv      + audio/train/     every 20th training clip and mixtures kept out of training (model selection)
    heldout.csv  + audio/heldout/   held-out recordings and speakers, and mixtures made only of them
    heldout_sources.csv             file_name,kind,classes,categories of every held-out clip
    sources.csv                     file_name,split,sources (OWNER/NAME@COMMIT:path; ...) of every clip
    mixtures.csv                    how each mixture was made (parts, gain, gap)
    manifest.json                   seed, counts, recipe checksums

Held out: ESC-50's 2 clips per class, UrbanSound8K fold 10, whole speakers (LibriSpeech,
phone speech, one spoken-digit speaker, RAVDESS actors 21-24, the LJSpeech reader), and whole
Berklee recordings, office takes, infants' phones and cough subjects. Clotho validation/evaluation
and AudioCaps audio or captions are never used. Everything random derives from --seed.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_data import captions as cap  # noqa: E402  (a sibling package of scripts)
from default_data import esc50, mixing, sources  # noqa: E402

RECIPES = cap.RECIPES
OUTPUTS = ("train.csv", "val.csv", "heldout.csv", "heldout_sources.csv", "sources.csv", "mixtures.csv",
           "manifest.json", "audio")
# Continuous sounds that make a plausible background for speech.
BACKGROUNDS = ["rain", "wind", "sea_waves", "engine_running", "air_conditioner", "crowd", "chirping_birds",
               "stream_water", "running_water", "street_music", "children_playing", "thunderstorm", "crackling_fire",
               "crickets", "insects", "train", "helicopter", "airplane", "washing_machine", "vacuum_cleaner",
               "jackhammer", "drilling", "dog", "siren", "electric_fan"]
BACKGROUND_GAIN_DB = (-18.0, -8.0)
OVERLAY_GAIN_DB = 6.0
SEQUENCE_GAIN_DB = 3.0
SEQUENCE_GAP_S = (0.2, 1.2)
VAL_SINGLES_EVERY = 20
# Field recordings are scenes: an ambience throughout with events over it, crowds of talkers.
SCENE_BEDS = ["rain", "wind", "sea_waves", "engine_running", "air_conditioner", "crowd", "chirping_birds",
              "stream_water", "running_water", "street_music", "children_playing", "thunderstorm", "crackling_fire",
              "crickets", "insects", "train", "washing_machine", "vacuum_cleaner", "electric_fan"]
SCENE_SECONDS = (10.0, 20.0)
SCENE_GAIN_DB = (-2.0, 10.0)  # the event against the bed: mostly in front of it, as a recordist aims
BABBLE_VOICES = (4, 8)
BABBLE_SECONDS = (8.0, 15.0)
BABBLE_GAIN_DB = (-9.0, 0.0)  # near and far talkers
VAL_SCENES_EVERY = 10


@dataclass
class Item:
    """One clip of the output, single source or mixture."""

    file_name: str
    split: str  # "train" | "val" | "heldout"
    kind: str  # "single" | "copy" | "overlay" | "sequence" | "background" | "babble" | "scene"
    classes: list[str]
    captions: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    path: Path | None = None  # the written audio
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)  # label facts a caption may use (note length, dynamic)


def cap_per_class(clips: list, limit: int, rng: random.Random) -> list:
    """At most `limit` clips per class (a third of it per instrument: twelve instruments would
    otherwise outnumber every other kind of sound)."""
    by_class = defaultdict(list)
    for clip in clips:
        by_class[clip.cls].append(clip)
    kept = []
    for cls in sorted(by_class):
        group = sorted(by_class[cls], key=lambda c: c.name)
        n = limit // 3 if cls.startswith("instrument_") else limit
        kept += rng.sample(group, min(n, len(group)))
    return kept


def items_by_class(items: list[Item], split: str | None = None) -> dict[str, list[Item]]:
    """Items (of `split` only, if given) grouped by their first class, in input order."""
    groups = defaultdict(list)
    for item in items:
        if split is None or item.split == split:
            groups[item.classes[0]].append(item)
    return groups


def scene_split(index: int) -> str:
    """Crowds and scenes: every VAL_SCENES_EVERY-th is kept for validation."""
    return "val" if index % VAL_SCENES_EVERY == VAL_SCENES_EVERY - 1 else "train"


def esc50_items(shared: Path, out: Path, seed: int, copy_audio: bool) -> list[Item]:
    """ESC-50 clips with 5 of the captions written for their class (held-out ones too, as references)."""
    written = cap.load_written_captions(RECIPES / "esc50_captions.csv")
    clips = esc50.load_esc50(shared / "esc50")
    heldout = {c.file_name for c in esc50.choose_heldout(clips, random.Random(f"{seed}/split"))}
    rng = random.Random(f"{seed}/captions")
    items = []
    for clip in clips:
        split = "heldout" if clip.file_name in heldout else "train"
        dest = out / "audio" / split / clip.file_name
        dest.unlink(missing_ok=True)
        if copy_audio:
            shutil.copyfile(clip.path, dest)
        else:
            dest.symlink_to(clip.path.resolve())
        items.append(Item(clip.file_name, split, "single", [clip.category],
                          rng.sample(written[clip.category], cap.CAPTIONS_PER_CLIP),
                          [f"ESC-50:{clip.path.name}"], dest))
    return items


def source_items(args, out: Path, classes: dict) -> list[Item]:
    clips = sources.load_source_clips(args.sources, cap.load_instruments())
    rng = random.Random(f"{args.seed}/sources")
    chosen = (cap_per_class([c for c in clips if not c.heldout], args.train_per_class, rng)
              + cap_per_class([c for c in clips if c.heldout], args.heldout_per_class, rng))
    files = sources.extract_parts([p for c in chosen for p in c.parts], args.mirrors, out / "raw")
    items = []
    for i, clip in enumerate(sorted(chosen, key=lambda c: c.name), 1):
        split = "heldout" if clip.heldout else "train"
        dest = out / "audio" / split / clip.name
        audio = mixing.render_source([files[p] for p in clip.parts], sources.MAX_SECONDS)
        mixing.write_flac(dest, audio)
        caption_rng = random.Random(f"{args.seed}/{clip.name}")
        captions = cap.single_captions(classes[clip.cls], len(audio) / mixing.SAMPLE_RATE, caption_rng, clip.detail)
        items.append(Item(clip.name, split, "single", [clip.cls], captions, [p.source_id for p in clip.parts], dest,
                          len(audio) / mixing.SAMPLE_RATE, clip.detail))
        if i % 500 == 0:
            print(f"sources {i}/{len(chosen)}", flush=True)
    return items


def plan_mixtures(pool: list[Item], classes: dict, kind: str, count: int, rng: random.Random) -> list[tuple[Item, Item]]:
    """`count` distinct pairs of clips of two different classes, classes drawn uniformly. A
    background mixture pairs a speech clip with a clip of a BACKGROUNDS class."""
    by_class = items_by_class(pool)
    names = sorted(by_class)
    if kind == "background":
        firsts = [c for c in names if classes[c].category == "speech"]
        seconds = [c for c in names if c in BACKGROUNDS]
    else:
        firsts = seconds = names
    pairs, seen = [], set()
    while len(pairs) < count and firsts and seconds:
        a, b = rng.choice(firsts), rng.choice(seconds)
        if a == b or classes[a].category == classes[b].category and kind != "background" and rng.random() < 0.7:
            continue
        first, second = rng.choice(by_class[a]), rng.choice(by_class[b])
        if (first.file_name, second.file_name) not in seen:
            seen.add((first.file_name, second.file_name))
            pairs.append((first, second))
    return pairs


def build_mixture(kind: str, name: str, split: str, first: Item, second: Item, classes: dict, seed: int,
                  folder: Path) -> tuple[Item, mixing.Mixture]:
    rng = random.Random(f"{seed}/{name}")  # each mixture reproducible on its own, whatever the counts
    a, b = mixing.read_clip(first.path), mixing.read_clip(second.path)
    mix = mixing.Mixture(name, kind, first.file_name, second.file_name)
    if kind == "overlay":
        mix.gain_db = round(rng.uniform(-OVERLAY_GAIN_DB, OVERLAY_GAIN_DB), 2)
        audio = mixing.render_overlay(a, b, mix.gain_db)
    elif kind == "background":
        mix.gain_db = round(rng.uniform(*BACKGROUND_GAIN_DB), 2)
        audio = mixing.render_background(a, b, mix.gain_db)
    else:
        mix.gain_db = round(rng.uniform(-SEQUENCE_GAIN_DB, SEQUENCE_GAIN_DB), 2)
        audio, mix.gap_s, mix.lead_s = mixing.render_sequence(a, b, mix.gain_db, rng.uniform(*SEQUENCE_GAP_S), rng.random())
    path = folder / name
    mixing.write_flac(path, audio)
    mix.captions = cap.mixture_captions(kind, classes[first.classes[0]], classes[second.classes[0]], mix.gain_db,
                                        mix.gap_s, rng)
    item = Item(name, split, kind, [first.classes[0], second.classes[0]], mix.captions,
                first.sources + second.sources, path)
    return item, mix


def mixture_items(singles: list[Item], classes: dict, args, out: Path) -> tuple[list[Item], list[mixing.Mixture]]:
    """Training mixtures (every `val_every`-th kept for validation) from training clips, and
    held-out mixtures from held-out clips only."""
    items, mixes = [], []
    plans = {"train": (args.backgrounds, args.overlays, args.sequences),
             "heldout": (args.heldout_mixtures // 2, args.heldout_mixtures // 4, args.heldout_mixtures // 4)}
    for split, counts in plans.items():
        pool = [s for s in singles if s.split == split]
        for kind, count in zip(("background", "overlay", "sequence"), counts):
            pairs = plan_mixtures(pool, classes, kind, count, random.Random(f"{args.seed}/{split}/{kind}"))
            val_every = max(1, round(len(pairs) / max(1, args.val_mixtures // 3))) if split == "train" else 0
            for i, (first, second) in enumerate(pairs):
                item_split = "val" if val_every and i % val_every == val_every - 1 else split
                name = f"mix_{split}_{kind}_{i:04d}.flac"
                folder = out / "audio" / ("heldout" if split == "heldout" else "train")
                item, mix = build_mixture(kind, name, item_split, first, second, classes, args.seed, folder)
                items.append(item)
                mixes.append(mix)
            print(f"{split} {kind} mixtures: {len(pairs)}", flush=True)
    return items, mixes


def babble_items(singles: list[Item], classes: dict, args, out: Path) -> tuple[list[Item], list[mixing.Mixture]]:
    """Crowds: several training voices talking at once, captioned as a crowd. Training only
    (every VAL_SCENES_EVERY-th for validation): held-out numbers stay comparable across builds."""
    voices = [s for s in singles if s.split == "train" and classes[s.classes[0]].category == "speech"]
    items, mixes = [], []
    for i in range(args.babbles if voices else 0):
        name = f"mix_train_babble_{i:04d}.flac"
        rng = random.Random(f"{args.seed}/{name}")
        chosen = rng.sample(voices, rng.randint(*BABBLE_VOICES))
        seconds = round(rng.uniform(*BABBLE_SECONDS), 2)
        audio = mixing.render_babble([mixing.read_clip(v.path) for v in chosen],
                                     [rng.uniform(*BABBLE_GAIN_DB) for _ in chosen], [rng.random() for _ in chosen],
                                     seconds)
        path = out / "audio" / "train" / name
        mixing.write_flac(path, audio)
        items.append(Item(name, scene_split(i), "babble", ["crowd"], cap.single_captions(classes["crowd"], seconds, rng),
                          [src for v in chosen for src in v.sources], path, seconds))
        mixes.append(mixing.Mixture(name, "babble", ";".join(v.file_name for v in chosen), ""))
    print(f"train babble mixtures: {len(items)}", flush=True)
    return items, mixes


def scene_items(pool: list[Item], classes: dict, args, out: Path) -> tuple[list[Item], list[mixing.Mixture]]:
    """Scenes: one event over an ambience of SCENE_BEDS heard throughout, 10-20 s like a field
    recording, captioned as two sources at once (the louder one first). Training only."""
    by_class = items_by_class(pool, "train")
    beds = [c for c in SCENE_BEDS if c in by_class]
    events = [c for c in sorted(by_class) if c not in SCENE_BEDS and not c.startswith("instrument_")]
    items, mixes = [], []
    for i in range(args.scenes if beds and events else 0):
        name = f"mix_train_scene_{i:04d}.flac"
        rng = random.Random(f"{args.seed}/{name}")
        bed_class, event_class = rng.choice(beds), rng.choice(events)
        bed, event = rng.choice(by_class[bed_class]), rng.choice(by_class[event_class])
        mix = mixing.Mixture(name, "scene", bed.file_name, event.file_name, round(rng.uniform(*SCENE_GAIN_DB), 2))
        audio, mix.lead_s = mixing.render_scene(mixing.read_clip(bed.path), mixing.read_clip(event.path), mix.gain_db,
                                                rng.random(), rng.uniform(*SCENE_SECONDS))
        path = out / "audio" / "train" / name
        mixing.write_flac(path, audio)
        mix.captions = cap.mixture_captions("overlay", classes[bed_class], classes[event_class], mix.gain_db, 0.0, rng)
        items.append(Item(name, scene_split(i), "scene", [bed_class, event_class], mix.captions, bed.sources + event.sources,
                          path, len(audio) / mixing.SAMPLE_RATE))
        mixes.append(mix)
    print(f"train scene mixtures: {len(items)}", flush=True)
    return items, mixes


def oversample(singles: list[Item], classes: dict, written: dict, args) -> list[Item]:
    """Copies of the training clips of rare classes (ESC-50 gives a class 6 clips, UrbanSound8K
    150), so that every class has at least `min_train_per_class` training items: without them
    the decoder's prior favours the large classes. A copy is a link to the same audio (the same
    cached features) with 5 other captions of its class."""
    by_class = items_by_class(singles, "train")
    copies = []
    for cls in sorted(by_class):
        group = by_class[cls]
        for i in range(max(0, args.min_train_per_class - len(group))):
            item = group[i % len(group)]
            rng = random.Random(f"{args.seed}/copy/{item.file_name}/{i}")
            name = f"{Path(item.file_name).stem}~{i // len(group) + 1}{Path(item.file_name).suffix}"
            captions = (rng.sample(written[cls], cap.CAPTIONS_PER_CLIP) if cls in written
                        else cap.single_captions(classes[cls], item.seconds, rng, item.detail))
            path = item.path.with_name(name)
            path.unlink(missing_ok=True)
            path.symlink_to(item.path.resolve())
            copies.append(Item(name, "train", "copy", [cls], captions, item.sources, path, item.seconds, item.detail))
    return copies


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_outputs(out: Path, items: list[Item], mixes: list[mixing.Mixture], classes: dict, manifest: dict) -> None:
    caption_header = ["file_name"] + [f"caption_{i + 1}" for i in range(cap.CAPTIONS_PER_CLIP)]
    for split in ("train", "val", "heldout"):
        write_csv(out / f"{split}.csv", caption_header,
                  ([it.file_name, *it.captions] for it in items if it.split == split))
    write_csv(out / "heldout_sources.csv", ["file_name", "kind", "classes", "categories"],
              ([it.file_name, it.kind, ";".join(it.classes), ";".join(classes[c].category for c in it.classes)]
               for it in items if it.split == "heldout"))
    write_csv(out / "sources.csv", ["file_name", "split", "sources"],
              ([it.file_name, it.split, ";".join(it.sources)] for it in items))
    write_csv(out / "mixtures.csv", ["file_name", "kind", "first", "second", "second_gain_db", "gap_s", "lead_s"],
              ([m.file_name, m.kind, m.first, m.second, f"{m.gain_db:.2f}", f"{m.gap_s:.3f}", f"{m.lead_s:.3f}"]
               for m in mixes))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def prepare_out_dir(out: Path) -> None:
    """Refuse to write into a non-empty folder this script did not make; clear the tables of one
    it did. Audio stays: a rebuild leaves unchanged clips untouched (the feature cache knows a
    file by its path, size and time), and `remove_stale_audio` drops the clips no longer made."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS + ("raw",))
        if foreign:
            raise SystemExit(f"{out} holds files this script did not make ({', '.join(foreign[:3])}); choose another --out")
        for name in OUTPUTS:
            if name != "audio":
                (out / name).unlink(missing_ok=True)
    for split in ("train", "heldout"):
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)


def remove_stale_audio(out: Path, items: list[Item]) -> None:
    kept = {item.path for item in items}
    for split in ("train", "heldout"):
        for path in (out / "audio" / split).iterdir():
            if path not in kept:
                path.unlink()


def counts(items: list[Item]) -> dict:
    table = defaultdict(int)
    for it in items:
        table[f"{it.split}_{it.kind}"] += 1
    return dict(sorted(table.items()))


def build(args) -> dict:
    started = time.monotonic()
    classes = cap.load_classes()
    prepare_out_dir(args.out)
    singles = esc50_items(args.shared, args.out, args.seed, args.copy_audio)
    if args.sources:
        singles += source_items(args, args.out, classes)
    for i, item in enumerate(it for it in singles if it.split == "train"):
        if i % VAL_SINGLES_EVERY == VAL_SINGLES_EVERY - 1:  # model selection sees single sources too
            item.split = "val"
    mixtures, mixes = mixture_items(singles, classes, args, args.out)
    babbles, babble_mixes = babble_items(singles, classes, args, args.out)
    scenes, scene_mixes = scene_items(singles + babbles, classes, args, args.out)
    mixes += babble_mixes + scene_mixes
    copies = oversample(singles, classes, cap.load_written_captions(RECIPES / "esc50_captions.csv"), args)
    items = singles + copies + mixtures + babbles + scenes
    remove_stale_audio(args.out, items)
    recipes = sorted(RECIPES.glob("*.*"))
    manifest = {
        "seed": args.seed, "sample_rate": mixing.SAMPLE_RATE, "captions_per_clip": cap.CAPTIONS_PER_CLIP,
        "counts": counts(items),
        "classes": {split: len({c for it in items if it.split == split for c in it.classes})
                    for split in ("train", "heldout")},
        "recipes": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in recipes},
    }
    write_outputs(args.out, items, mixes, classes, manifest)
    print(f"wrote {args.out}: {manifest['counts']} in {time.monotonic() - started:.0f} s")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder (ESC-50)")
    parser.add_argument("--sources", type=Path, default=None, help="the folder of source lists (*.tsv)")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"),
                        help="where the listed repositories were fetched (OWNER+NAME/repo)")
    parser.add_argument("--out", type=Path, default=Path("data/default"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=150, help="training clips per class at most")
    parser.add_argument("--heldout-per-class", type=int, default=12, help="held-out clips per class at most")
    parser.add_argument("--min-train-per-class", type=int, default=30,
                        help="rare classes' training clips are repeated (with other captions) up to this many")
    parser.add_argument("--backgrounds", type=int, default=450, help="training mixtures: speech over a background")
    parser.add_argument("--overlays", type=int, default=250, help="training mixtures: two sources at once")
    parser.add_argument("--sequences", type=int, default=250, help="training mixtures: one after the other")
    parser.add_argument("--babbles", type=int, default=0,
                        help="training crowds: several voices at once (tried, not kept: docs/BENCHMARKS.md)")
    parser.add_argument("--scenes", type=int, default=0,
                        help="training scenes: an event over an ambience (tried, not kept: docs/BENCHMARKS.md)")
    parser.add_argument("--val-mixtures", type=int, default=90, help="of those, kept out of training for validation")
    parser.add_argument("--heldout-mixtures", type=int, default=200, help="mixtures of held-out clips, for evaluation")
    parser.add_argument("--copy-audio", action="store_true", help="copy ESC-50 audio instead of symlinking")
    return parser.parse_args(argv)


if __name__ == "__main__":
    build(parse_args())
