"""The default model's training data: written recipes, dataset builder, source hit rate."""
from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "data_recipes"


def load_script(name: str):
    """scripts/ is not a package; load a script as a module by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


builder = load_script("build_default_dataset")
evaluation = load_script("evaluate_default_model")
source_hit = load_script("source_hit")
from default_data import captions, mixing, sources  # noqa: E402  (imported by the builder above)

SOURCES = ROOT.parent / "shared" / "sources"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def esc50_categories(shared_data) -> set[str]:
    return {row["category"] for row in read_rows(shared_data / "esc50" / "meta" / "esc50.csv")}


@pytest.fixture(scope="module")
def synonyms():
    return source_hit.load_synonyms(RECIPES / "source_synonyms.yaml")


@pytest.fixture(scope="module")
def classes():
    return captions.load_classes()


# ------------------------------------------------------------------------------- recipes


def test_written_captions_cover_every_category(esc50_categories):
    written = captions.load_written_captions(RECIPES / "esc50_captions.csv")
    assert set(written) == esc50_categories
    for category, texts in written.items():
        assert len(set(texts)) >= 6, category
        for caption in texts:
            assert 6 <= len(caption.split()) <= 20, caption
            assert caption.lower().strip(" .") != category.replace("_", " ")


def test_every_class_has_phrases_words_and_a_category(esc50_categories, classes, synonyms):
    assert esc50_categories <= set(classes) and set(synonyms) == esc50_categories
    families = {"speech", "music", "vehicles", "water", "animals", "domestic", "urban", "human", "nature"}
    for name, cls in classes.items():
        assert cls.category in families, name
        assert cls.clauses and cls.gerunds and cls.nouns and cls.words, name


def test_every_phrase_and_written_caption_names_its_source(classes):
    # The evaluation counts a caption as naming its source by these words, so every training
    # target must contain one of them.
    written = captions.load_written_captions(RECIPES / "esc50_captions.csv")
    for name, cls in classes.items():
        for text in written.get(name, []) + cls.clauses + cls.gerunds + cls.nouns:
            assert evaluation.named_words(text, cls.words), (name, text)


def test_single_source_captions_are_distinct_and_6_to_20_words(classes):
    rng = random.Random(0)
    for name, cls in classes.items():
        for seconds in (0.5, 3.0, 9.0):
            texts = captions.single_captions(cls, seconds, rng, {"length": "long", "dynamic": "piano"})
            assert len(set(texts)) == captions.CAPTIONS_PER_CLIP
            assert all(6 <= len(t.split()) <= 20 and t[0].isupper() and t.endswith(".") for t in texts), texts


def test_mixture_captions_name_both_parts_and_background_only_when_quiet(classes):
    rng = random.Random(1)
    speech, rain = classes["woman_speaking"], classes["rain"]
    quiet = captions.mixture_captions("background", speech, rain, -12.0, 0.0, rng)
    level = captions.mixture_captions("overlay", speech, rain, 1.0, 0.0, rng)
    in_turn = captions.mixture_captions("sequence", speech, rain, 0.0, 0.8, rng)
    for text in quiet + level + in_turn:
        assert evaluation.named_words(text, speech.words) and evaluation.named_words(text, rain.words), text
        assert 6 <= len(text.split()) <= 20, text
    assert all("background" in t or "quiet" in t for t in quiet)
    assert not any("background" in t for t in level + in_turn)
    assert not any(re.search(r"\bloud", t) for t in quiet)  # "aloud" is fine, "loud rain" would not be


def test_judge_counts_named_and_invented_sources(classes):
    verdict = evaluation.judge("A woman speaks while a dog barks.", ["woman_speaking"], classes)
    assert verdict["named"] == ["woman_speaking"] and "dog" in verdict["invented"]
    verdict = evaluation.judge("Rain falls on a roof.", ["rain", "man_speaking"], classes)
    assert verdict["named"] == ["rain"] and verdict["invented"] == []
    assert evaluation.judge("A cathedral bell rings.", ["cat"], classes)["named"] == []
    # words of other classes that the clip's own class's captions use are not inventions
    assert evaluation.judge("A rooster crows loudly.", ["rooster"], classes)["invented"] == []
    assert evaluation.judge("Children shout and laugh while playing.", ["children_playing"], classes)["invented"] == []
    assert "laugh" in evaluation.judge("A rooster crows while children laugh.", ["rooster"], classes)["invented"]
    # ... and so are those of the captions written for an ESC-50 class (data_recipes/esc50_captions.csv)
    chainsaw = "A loud chainsaw engine sputters and screams as it saws into a tree."
    assert evaluation.judge(chainsaw, ["chainsaw"], classes)["invented"] == []
    assert "screams" in evaluation.judge(chainsaw.replace("chainsaw", "hair dryer"), ["hair_dryer"], classes)["invented"]


# ---------------------------------------------------------------------------- source hit


def test_source_hit_rate_matches_whole_words_and_phrases():
    synonyms = {"dog": ["dog", "barks"], "vacuum_cleaner": ["vacuum cleaner", "hoover"], "cat": ["cat"]}
    categories = {"a.wav": "dog", "b.wav": "vacuum_cleaner", "c.wav": "cat", "d.wav": "dog"}
    predictions = {
        "a.wav": "A DOG'S bark echoes.",  # apostrophe dropped -> "dogs", not "dog"
        "b.wav": "Someone runs a vacuum-cleaner.",  # hyphen is a word break
        "c.wav": "A cathedral bell rings.",  # "cat" inside a word does not count
        "d.wav": "Something barks twice.",
        "extra.wav": "a dog",  # not in the evaluation set: ignored
    }
    hits = source_hit.source_hits(predictions, categories, synonyms)
    assert hits == {"a.wav": False, "b.wav": True, "c.wav": False, "d.wav": True}
    assert source_hit.source_hit_rate(predictions, categories, synonyms) == 0.5


def test_source_hit_rate_refuses_missing_predictions():
    with pytest.raises(KeyError):
        source_hit.source_hit_rate({}, {"a.wav": "dog"}, {"dog": ["dog"]})


# ------------------------------------------------------------------------------- sources


@pytest.fixture(scope="module")
def source_clips(classes) -> list:
    if not SOURCES.is_dir():
        raise FileNotFoundError(f"source lists not found at {SOURCES}")
    return sources.load_source_clips(SOURCES, captions.load_instruments())


def test_every_listed_recording_maps_to_a_known_class(source_clips, classes):
    assert len(source_clips) > 10_000
    assert {c.cls for c in source_clips} <= set(classes)
    families = {classes[c.cls].category for c in source_clips}
    assert {"speech", "music", "vehicles", "water", "animals", "domestic", "urban", "human"} <= families


def test_groups_are_never_split_between_training_and_heldout(source_clips):
    split_of: dict[str, set[bool]] = {}
    for clip in source_clips:
        split_of.setdefault(clip.group, set()).add(clip.heldout)
    assert all(len(s) == 1 for s in split_of.values())
    heldout = {c.group.split("/")[0] for c in source_clips if c.heldout}
    assert {"us8k", "librispeech", "alnum", "fsdd", "ravdess", "lj", "berklee", "office"} <= heldout
    us8k_heldout = {c.parts[0].path.split("/")[2] for c in source_clips if c.group.startswith("us8k") and c.heldout}
    assert us8k_heldout == {"fold10"}


def test_source_ids_name_repository_commit_and_path(source_clips):
    for clip in source_clips[::500]:
        for part in clip.parts:
            repo, rest = part.source_id.split("@")
            commit, path = rest.split(":", 1)
            assert repo.count("/") == 1 and len(commit) == 40 and path == part.path


def test_extract_and_render_a_clip_from_a_repository_at_its_commit(shared_data, tmp_path):
    """A real git repository holding two real recordings: blobs are read at the listed ids and
    rendered one after another as one 44.1 kHz FLAC clip."""
    repo = tmp_path / "mirrors" / "someone+sounds" / "work"
    repo.mkdir(parents=True)
    esc = sorted((shared_data / "esc50" / "audio").glob("*.flac"))[:2]
    for path in esc:
        (repo / path.name).write_bytes(path.read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "sounds"], check=True)
    (repo / ".git").rename(repo.parent / "repo")  # a bare-like mirror: OWNER+NAME/repo
    blobs = [subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True, check=True).stdout.strip()
             for p in esc]
    parts = [sources.Part("someone/sounds", "0" * 40, p.name, b) for p, b in zip(esc, blobs)]
    files = sources.extract_parts(parts, tmp_path / "mirrors", tmp_path / "raw")
    assert [files[p].read_bytes() for p in parts] == [p.read_bytes() for p in esc]
    audio = mixing.render_source([files[p] for p in parts], max_seconds=8.0)
    assert len(audio) == 8 * mixing.SAMPLE_RATE and np.abs(audio).max() <= 1.0


def tone(hz: float, seconds: float, silence_s: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * mixing.SAMPLE_RATE)) / mixing.SAMPLE_RATE
    pad = np.zeros(int(silence_s * mixing.SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([pad, 0.3 * np.sin(2 * np.pi * hz * t).astype(np.float32), pad])


def band_energy(audio: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / mixing.SAMPLE_RATE)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / spectrum.sum())


def test_babble_keeps_every_voice_talking_to_the_end():
    voices = [tone(hz, 1.0, silence_s=0.5) for hz in (300, 500, 700, 900)]
    audio = mixing.render_babble(voices, [0.0, -3.0, -6.0, 0.0], [0.0, 0.3, 0.6, 0.9], seconds=6.0)
    assert len(audio) == 6 * mixing.SAMPLE_RATE and np.abs(audio).max() <= mixing.PEAK_LIMIT + 1e-6
    for second in range(6):  # the silence around each voice is trimmed: no voice pauses for a whole second
        window = audio[second * mixing.SAMPLE_RATE: (second + 1) * mixing.SAMPLE_RATE]
        assert all(band_energy(window, hz) > 0.02 for hz in (300, 500, 700, 900)), second


def test_scene_puts_one_event_over_an_ambience_heard_throughout():
    rng = np.random.default_rng(0)
    bed = (0.05 * rng.standard_normal(2 * mixing.SAMPLE_RATE)).astype(np.float32)
    event = tone(1000, 0.5, silence_s=1.0)
    audio, start = mixing.render_scene(bed, event, gain_db=6.0, start_fraction=0.5, seconds=12.0)
    assert len(audio) == 12 * mixing.SAMPLE_RATE and 0 < start < 12
    begin, end = int(start * mixing.SAMPLE_RATE), int((start + 0.5) * mixing.SAMPLE_RATE)
    assert band_energy(audio[begin:end], 1000) > 0.5  # 6 dB over the bed, where it was placed
    assert band_energy(audio[:begin], 1000) < 0.01 and band_energy(audio[end + 2205:], 1000) < 0.01
    rms = mixing.frame_rms(audio, frame=mixing.SAMPLE_RATE)
    assert rms.min() > 0.5 * np.median(rms)  # the bed never stops, though it was 2 s long


# ------------------------------------------------------------------------------- builder


# The ESC-50 part of the builder, small: CI has no speech (so no crowds), and ESC-50 has scene beds.
SMALL = ["--seed", "3", "--backgrounds", "0", "--overlays", "8", "--sequences", "8", "--scenes", "10",
         "--babbles", "0", "--val-mixtures", "6", "--heldout-mixtures", "8"]


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory) -> Path:
    """The ESC-50 part of the builder (what CI has); the source lists need the mirrored repositories."""
    out = tmp_path_factory.mktemp("default_dataset")
    builder.build(builder.parse_args(["--shared", str(shared_data), "--out", str(out), *SMALL]))
    return out


def test_split_counts(built):
    counts = json.loads((built / "manifest.json").read_text())["counts"]
    assert counts["heldout_single"] == 100 and counts["train_single"] + counts["val_single"] == 314
    assert counts["val_single"] == 314 // builder.VAL_SINGLES_EVERY
    heldout = read_rows(built / "heldout_sources.csv")
    singles = [r for r in heldout if r["kind"] == "single"]
    per_class: dict[str, int] = {}
    for row in singles:
        per_class[row["classes"]] = per_class.get(row["classes"], 0) + 1
    assert len(per_class) == 50 and set(per_class.values()) == {2}


def test_heldout_clips_are_never_trained_on(built):
    heldout = {row["file_name"] for row in read_rows(built / "heldout.csv")}
    train = {row["file_name"] for row in read_rows(built / "train.csv")}
    val = {row["file_name"] for row in read_rows(built / "val.csv")}
    assert not heldout & train and not heldout & val and not train & val
    assert not heldout & {p.name for p in (built / "audio" / "train").iterdir()}
    for mixture in read_rows(built / "mixtures.csv"):
        parts = {part for part in mixture["first"].split(";") + [mixture["second"]] if part}  # a crowd has many
        assert parts <= (heldout if mixture["file_name"].startswith("mix_heldout") else train)


def test_rows_have_five_captions_and_audio(built):
    for csv_name, audio_dir in (("train.csv", "train"), ("val.csv", "train"), ("heldout.csv", "heldout")):
        for row in read_rows(built / csv_name):
            assert all(row[f"caption_{i}"].strip() for i in range(1, 6)), row
            assert (built / "audio" / audio_dir / row["file_name"]).is_file(), row["file_name"]


def test_mixture_audio_and_captions(built, classes):
    rows = {row["file_name"]: row for name in ("train.csv", "val.csv", "heldout.csv")
            for row in read_rows(built / name)}
    kinds = {row["file_name"]: row for row in read_rows(built / "heldout_sources.csv")}
    for mixture in read_rows(built / "mixtures.csv"):
        folder = "heldout" if mixture["file_name"].startswith("mix_heldout") else "train"
        audio, rate = sf.read(built / "audio" / folder / mixture["file_name"], dtype="float32")
        longest = max(builder.SCENE_SECONDS) if mixture["kind"] == "scene" else mixing.MIXTURE_SECONDS
        assert rate == 44100 and audio.ndim == 1 and len(audio) <= longest * 44100
        assert 0.05 < np.abs(audio).max() <= mixing.PEAK_LIMIT + 1e-3
        texts = [rows[mixture["file_name"]][f"caption_{i}"] for i in range(1, 6)]
        assert len(set(texts)) == 5
        if mixture["file_name"] in kinds:
            parts = kinds[mixture["file_name"]]["classes"].split(";")
            for text in texts:  # both sources are named in every caption
                assert all(evaluation.named_words(text, classes[c].words) for c in parts), text


def test_scenes_name_their_ambience_and_their_event(shared_data, built, classes):
    category = {Path(row["filename"]).stem: row["category"]
                for row in read_rows(shared_data / "esc50" / "meta" / "esc50.csv")}
    rows = {row["file_name"]: row for name in ("train.csv", "val.csv") for row in read_rows(built / name)}
    scenes = [m for m in read_rows(built / "mixtures.csv") if m["kind"] == "scene"]
    val = {row["file_name"] for row in read_rows(built / "val.csv")}
    assert len(scenes) == 10 and sum(m["file_name"] in val for m in scenes) == 1  # every 10th validates
    for mixture in scenes:
        bed, event = (category[Path(mixture[part]).stem] for part in ("first", "second"))
        assert bed in builder.SCENE_BEDS and event not in builder.SCENE_BEDS
        seconds = sf.info(built / "audio" / "train" / mixture["file_name"]).duration
        assert min(builder.SCENE_SECONDS) - 0.01 <= seconds <= max(builder.SCENE_SECONDS) + 0.01
        for text in (rows[mixture["file_name"]][f"caption_{i}"] for i in range(1, 6)):
            assert evaluation.named_words(text, classes[bed].words), text
            assert evaluation.named_words(text, classes[event].words), text


def test_babbles_are_crowds_of_training_voices(tmp_path, classes):
    """CI has no speech recordings: the voices here are tones labelled as speech, written to disk."""
    voices = []
    for i in range(10):
        path = tmp_path / f"voice{i}.flac"
        sf.write(path, tone(200 + 50 * i, 1.0, silence_s=0.2), mixing.SAMPLE_RATE)
        voices.append(builder.Item(path.name, "train", "single", ["man_speaking"], [], [f"voice{i}"], path, 1.4))
    voices.append(builder.Item("held.flac", "heldout", "single", ["man_speaking"], [], ["held"], tmp_path / "held.flac"))
    (tmp_path / "out" / "audio" / "train").mkdir(parents=True)
    args = builder.parse_args(["--babbles", "10", "--seed", "0"])
    babbles, mixes = builder.babble_items(voices, classes, args, tmp_path / "out")
    assert len(babbles) == 10 and sum(b.split == "val" for b in babbles) == 1
    for babble, mix in zip(babbles, mixes):
        parts = mix.first.split(";")
        assert 4 <= len(parts) <= 8 and len(set(parts)) == len(parts) and "held.flac" not in parts
        assert min(builder.BABBLE_SECONDS) <= sf.info(babble.path).duration <= max(builder.BABBLE_SECONDS)
        assert babble.classes == ["crowd"] and len(babble.sources) == len(parts)
        assert all(evaluation.named_words(text, classes["crowd"].words) for text in babble.captions)


def test_builder_is_deterministic(shared_data, built, tmp_path):
    builder.build(builder.parse_args(["--shared", str(shared_data), "--out", str(tmp_path), *SMALL]))
    for name in ("train.csv", "val.csv", "heldout.csv", "mixtures.csv", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes(), name
    first = next((built / "audio" / "train").glob("mix_train_sequence_*.flac"))
    assert (tmp_path / "audio" / "train" / first.name).read_bytes() == first.read_bytes()


def test_rare_classes_are_repeated_with_other_captions(built):
    train = read_rows(built / "train.csv")
    per_class: dict[str, int] = {}
    for row in train:
        if not row["file_name"].startswith("mix_"):
            category = int(Path(row["file_name"].split("~")[0]).stem.rsplit("-", 1)[1])
            per_class[category] = per_class.get(category, 0) + 1
    assert len(per_class) == 50 and min(per_class.values()) >= 30  # ESC-50 gives each class ~6 training clips
    by_name = {row["file_name"]: row for row in train}
    copies = [name for name in by_name if "~" in name]
    for name in copies:
        path, original = built / "audio" / "train" / name, name.split("~")[0] + ".flac"
        assert path.resolve() == (built / "audio" / "train" / original).resolve()  # the same cached features
    assert sum(by_name[n]["caption_1"] != by_name[n.split("~")[0] + ".flac"]["caption_1"] for n in copies) > len(copies) / 2


def test_a_rebuild_leaves_unchanged_audio_untouched_and_drops_stale_clips(shared_data, tmp_path):
    def build(overlays: int) -> None:
        builder.build(builder.parse_args(["--shared", str(shared_data), "--out", str(tmp_path), *SMALL,
                                          "--overlays", str(overlays)]))

    build(8)
    mixtures = sorted((tmp_path / "audio" / "train").glob("mix_train_overlay_*.flac"))
    times = {p: p.stat().st_mtime_ns for p in mixtures}
    build(4)
    kept = sorted((tmp_path / "audio" / "train").glob("mix_train_overlay_*.flac"))
    assert kept == mixtures[:4] and all(p.stat().st_mtime_ns == times[p] for p in kept)
