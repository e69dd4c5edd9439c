"""The labelled recordings of ../shared/sources/*.tsv as training and held-out clips.

Each list names the real audio files of one public repository at a fixed commit; a clip's
source is written `OWNER/NAME@COMMIT:path` so anyone can rebuild the set. This module turns a
list's labels into sound classes (data_recipes/everyday_classes.yaml) and decides, per source,
which whole recordings or speakers are held out for evaluation.
"""
from __future__ import annotations

import csv
import hashlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MAX_SECONDS = 10.0  # longer recordings are cut to their first 10 s (the length of a Clotho-style clip)


@dataclass(frozen=True)
class Part:
    """One file of a public repository, at a fixed commit."""

    repo: str  # OWNER/NAME
    commit: str
    path: str
    blob: str

    @property
    def source_id(self) -> str:
        return f"{self.repo}@{self.commit}:{self.path}"


@dataclass
class SourceClip:
    """A training or held-out clip made of one file, or several files of one speaker in a row."""

    name: str  # file name in the output folder
    cls: str  # sound class
    group: str  # recording or speaker: a group is never split between training and held-out
    parts: list[Part]
    heldout: bool = False
    detail: dict = field(default_factory=dict)  # label facts a caption may use (note length, dynamic)


def read_list(tsv: Path) -> tuple[str, str, list[dict]]:
    """(repo, commit, rows) of one source list; rows marked EXCLUDE are dropped."""
    with open(tsv, encoding="utf-8") as f:
        header = f.readline()
        repo, commit = re.search(r"repo=(\S+)", header)[1], re.search(r"commit=(\S+)", header)[1]
        rows = [r for r in csv.DictReader(f, delimiter="\t") if not r["label"].startswith("EXCLUDE")]
    return repo, commit, rows


def label_fields(label: str) -> dict[str, str]:
    """`speech;gender=male;age=23` -> {'gender': 'male', 'age': '23', 'speech': ''}."""
    out = {}
    for item in label.split(";"):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by `text`: held-out choices do not move when other rows change."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


def safe_name(prefix: str, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)
    return f"{prefix}_{stem}.flac"


# ------------------------------------------------------------------------------- per source


def urbansound(repo, commit, rows) -> list[SourceClip]:
    """UrbanSound8K: fold 10 is held out (the official folds keep recordings apart)."""
    rename = {"dog_bark": "dog", "engine_idling": "engine_running"}
    clips = []
    for r in rows:
        _, fold, cls = r["label"].split(":")
        recording = Path(r["path"]).stem.split("-")[0]  # fsID: slices of one Freesound recording
        clips.append(SourceClip(safe_name("us8k", r["path"]), rename.get(cls, cls), f"us8k/{recording}",
                                [Part(repo, commit, r["path"], r["blob"])], heldout=fold == "fold10"))
    return clips


def librispeech(repo, commit, rows, heldout_fraction=0.25) -> list[SourceClip]:
    clips = []
    for r in rows:
        f = label_fields(r["label"])
        if "speaker" not in f or f.get("gender") not in ("male", "female"):
            continue
        group = f"librispeech/{f['speaker']}"
        clips.append(SourceClip(safe_name("libri", r["path"]), {"male": "man_speaking", "female": "woman_speaking"}[f["gender"]],
                                group, [Part(repo, commit, r["path"], r["blob"])],
                                heldout=stable_fraction(group) < heldout_fraction))
    return clips


def phone_speech(repo, commit, rows, heldout_fraction=0.25) -> list[SourceClip]:
    """People reading numbers and addresses and spelling names; one response id per speaker."""
    task_class = {"reading_a_phone_number_digit_by_digit": "numbers", "reading_a_street_address": "speaking",
                  "spelling_a_name_letter_by_letter": "spelling"}
    clips = []
    for r in rows:
        f = label_fields(r["label"])
        who = {"male": "man", "female": "woman"}.get(f.get("gender", ""))
        task = next((task_class[k] for k in task_class if k in f), None)
        if who is None or task is None:
            continue
        group = f"alnum/{Path(r['path']).stem}"
        clips.append(SourceClip(safe_name("alnum_" + task, r["path"]), f"{who}_{task}", group,
                                [Part(repo, commit, r["path"], r["blob"])],
                                heldout=stable_fraction(group) < heldout_fraction))
    return clips


def ljspeech(repo, commit, rows) -> list[SourceClip]:
    """One reader: all held out, an unseen voice for the evaluation."""
    return [SourceClip(safe_name("lj", r["path"]), "woman_speaking", "lj", [Part(repo, commit, r["path"], r["blob"])],
                       heldout=True) for r in rows if r["path"].endswith(".wav")]


def spoken_digits(repo, commit, rows, digits_per_clip=6, heldout_speaker="theo") -> list[SourceClip]:
    """Digits under a second each: six recordings of one speaker in a row make one clip."""
    by_speaker: dict[str, list[dict]] = {}
    for r in rows:
        by_speaker.setdefault(label_fields(r["label"])["speaker"], []).append(r)
    clips = []
    for speaker, items in sorted(by_speaker.items()):
        items.sort(key=lambda r: stable_fraction(r["path"]))
        for i in range(0, len(items) - digits_per_clip + 1, digits_per_clip):
            parts = [Part(repo, commit, r["path"], r["blob"]) for r in items[i:i + digits_per_clip]]
            clips.append(SourceClip(f"digits_{speaker}_{i // digits_per_clip:03d}.flac", "man_numbers",
                                    f"fsdd/{speaker}", parts, heldout=speaker == heldout_speaker))
    return clips


def ravdess_song(repo, commit, rows, heldout_actors=("21", "22", "23", "24")) -> list[SourceClip]:
    clips = []
    for r in rows:
        f = label_fields(r["label"])
        cls = {"male": "man_singing", "female": "woman_singing"}.get(f.get("gender", ""))
        if cls:
            clips.append(SourceClip(safe_name("ravdess", r["path"].replace("/", "_")), cls, f"ravdess/{f['actor']}",
                                    [Part(repo, commit, r["path"], r["blob"])], heldout=f["actor"] in heldout_actors))
    return clips


def philharmonia(repo, commit, rows, instruments: dict, heldout_fraction=0.15) -> list[SourceClip]:
    clips = []
    for r in rows:
        folder = r["path"].split("/")[1]
        if folder not in instruments:
            continue
        f = label_fields(r["label"])
        clips.append(SourceClip(safe_name("phil", r["path"]), "instrument_" + folder.replace(" ", "_"), f"phil/{r['path']}",
                                [Part(repo, commit, r["path"], r["blob"])],
                                heldout=stable_fraction(r["path"]) < heldout_fraction,
                                detail={"length": f.get("length", ""), "dynamic": f.get("dynamic", "")}))
    return clips


def office_events(repo, commit, rows) -> list[SourceClip]:
    """DCASE 2016 office events: 20 isolated takes per class, 4 of each held out."""
    rename = {"clearthroat": "clearing_throat", "cough": "coughing", "doorslam": "door_slam", "drawer": "drawer",
              "keyboard": "keyboard_typing", "keysDrop": "keys", "knock": "door_wood_knock", "laughter": "laughing",
              "pageturn": "page_turning", "phone": "phone_ringing", "speech": "person_speaking"}
    clips = []
    for r in rows:
        cls = label_fields(r["label"]).get("class")
        if cls in rename:
            clips.append(SourceClip(safe_name("office", r["path"]), rename[cls], f"office/{r['path']}",
                                    [Part(repo, commit, r["path"], r["blob"])],
                                    heldout=stable_fraction(r["path"]) < 0.2))
    return clips


def crying_infants(repo, commit, rows) -> list[SourceClip]:
    clips = []
    for r in rows:
        group = "cry/" + Path(r["path"]).stem.split("-")[0]  # the uploading phone
        clips.append(SourceClip(safe_name("cry", r["path"]), "crying_baby", group,
                                [Part(repo, commit, r["path"], r["blob"])], heldout=stable_fraction(group) < 0.2))
    return clips


def coughs(repo, commit, rows) -> list[SourceClip]:
    """Clinical cough recordings, the segmented cuts only; a subject's cuts stay together."""
    clips = []
    for r in rows:
        if "/segmented/" not in r["path"]:
            continue
        group = "cough/" + "-".join(Path(r["path"]).stem.split("-")[:3])
        clips.append(SourceClip(safe_name("cough", r["path"]), "coughing", group,
                                [Part(repo, commit, r["path"], r["blob"])], heldout=stable_fraction(group) < 0.2))
    return clips


# Berklee library names -> class; a name that matches nothing is left out (most are foley of
# objects no caption could name truthfully from the file name alone).
BERKLEE_CLASSES = [
    (r"rain\+thunder|^thunder", "thunderstorm"),
    (r"(^|_)rain|storm_water", "rain"),
    (r"river|waterfall|waves_small", "stream_water"),
    (r"water_in_sink|water_tap|running_water|^shower", "running_water"),
    (r"water_bubbles|waterbubbles|water_plunge|watersplash|swimming|water_in_bucket|water_pan", "splashing_water"),
    (r"^train|subway|underground_train", "train"),
    (r"helicopter", "helicopter"),
    (r"car_horn|honking", "car_horn"),
    (r"police_?siren", "siren"),
    (r"car_?door", "car_door"),
    (r"car_engine|engine_noise|loudmotor|boat_engine|^motor|driving|small_car|garbage_truck", "engine_running"),
    (r"^dog", "dog"),
    (r"^birds?|chirping|chriping", "chirping_birds"),
    (r"mooo", "cow"),
    (r"quack", "duck"),
    (r"cheers", "cheering"),
    (r"laughing_crowd|laughter", "laughing"),
    (r"^crowd|hallwaytalking", "crowd"),
    (r"scream|yell", "screaming"),
    (r"footsteps|walking|heels_on_tile|up_stairs|stomp_up_stairs|shoes_in_gravel", "footsteps"),
    (r"door_creak|creaky_door|door_squeak|old_door", "door_wood_creaks"),
    (r"door_close|door_?slam|doorslam|closingdoor|door_shut", "door_slam"),
    (r"vacuum", "vacuum_cleaner"),
    (r"hair-dryer", "hair_dryer"),
    (r"blender|food_chopper", "blender"),
    (r"coffee_machine", "coffee_machine"),
    (r"^shaver$", "shaver"),
    (r"^fan$|fan_1a|fan_long|fan_noise", "electric_fan"),
    (r"drill|electric_screwdriver|dremel", "drilling"),
    (r"glass_?break", "glass_breaking"),
    (r"can_opening", "can_opening"),
    (r"^keys|keyring|key_jingle", "keys"),
    (r"droppingcoins|coinspin|rolling_coins|coin_spinning|spinning_large_coin", "coins"),
    (r"paper_crumple|paper_rip|crumpled_bag|paper_bag", "paper"),
    (r"turning_pages", "page_turning"),
    (r"^eating|^chewing|chip_crush", "eating"),
    (r"chopping", "chopping"),
    (r"explosion", "explosion"),
    (r"^whistle\d*$", "whistling"),
    (r"sawing", "hand_saw"),
    (r"fire_long", "crackling_fire"),
    (r"stopwatch", "clock_tick"),
]


def berklee_class(name: str) -> str | None:
    lowered = name.lower()
    return next((cls for pattern, cls in BERKLEE_CLASSES if re.search(pattern, lowered)), None)


def berklee(repo, commit, rows, heldout_fraction=0.2) -> list[SourceClip]:
    """OLPC Berklee library (class from the file name) and the Salamander piano notes.
    Takes sharing a name (`DoorSlam1`, `DoorSlam2`) are one group."""
    clips = []
    for r in rows:
        path = r["path"]
        if path.startswith("salamander/") and path.endswith(".mp3"):
            clips.append(SourceClip(safe_name("piano", path), "piano", f"piano/{path}",
                                    [Part(repo, commit, path, r["blob"])], heldout=stable_fraction(path) < 0.2))
            continue
        f = label_fields(r["label"])
        if not path.startswith("berklee/") or "everyday_noise" not in f:
            continue
        cls = berklee_class(f.get("berklee_name", ""))
        if cls:
            group = f"berklee/{f['berklee_name'].lower()}"
            clips.append(SourceClip(safe_name("berklee", path), cls, group, [Part(repo, commit, path, r["blob"])],
                                    heldout=stable_fraction(group) < heldout_fraction))
    return clips


SOURCES = {
    "Alejandro-131004+AC-II.tsv": urbansound,
    "resemble-ai+Resemblyzer.tsv": librispeech,
    "Sakshee5+alphanumeric-audio-dataset.tsv": phone_speech,
    "coqui-ai+TTS.tsv": ljspeech,
    "Jakobovski+free-spoken-digit-dataset.tsv": spoken_digits,
    "bagustris+ravdess_song.tsv": ravdess_song,
    "skratchdot+philharmonia-samples.tsv": philharmonia,
    "Stevens05+SASED.tsv": office_events,
    "gveres+donateacry-corpus.tsv": crying_infants,
    "virufy+virufy-data.tsv": coughs,
    "Tonejs+audio.tsv": berklee,
}


def load_source_clips(sources_dir: Path, instruments: dict) -> list[SourceClip]:
    clips = []
    for list_name, make in SOURCES.items():
        repo, commit, rows = read_list(sources_dir / list_name)
        extra = {"instruments": instruments} if make is philharmonia else {}
        clips += make(repo, commit, rows, **extra)
    return clips


# ------------------------------------------------------------------------------- extraction


def extract_parts(parts: list[Part], mirrors: Path, out: Path) -> dict[Part, Path]:
    """Write each part's blob from its repository mirror (`fetch`ed to mirrors/OWNER+NAME/repo)
    under out/OWNER+NAME/<path>, once; returns part -> file."""
    files = {}
    by_repo: dict[str, list[Part]] = {}
    for part in parts:
        by_repo.setdefault(part.repo, []).append(part)
    for repo, repo_parts in by_repo.items():
        git_dir = mirrors / repo.replace("/", "+") / "repo"
        missing = []
        for part in repo_parts:
            target = out / repo.replace("/", "+") / part.path
            files[part] = target
            if not target.is_file():
                missing.append(part)
        for part in missing:
            data = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "blob", part.blob],
                                  check=True, capture_output=True).stdout
            files[part].parent.mkdir(parents=True, exist_ok=True)
            tmp = files[part].with_name(files[part].name + ".part")
            tmp.write_bytes(data)
            tmp.replace(files[part])
    return files
