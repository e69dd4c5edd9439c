"""Captions of the default model's training clips, in the style of AudioCaps and Clotho.

A single source gets a single-source caption built from its class's phrases; a mixture made by
the builder gets a caption that names both parts and says how they relate (at once, one after
the other, one in the background). Words of loudness and distance appear only where the mix
made them true. Every caption is 6-20 words, present tense, and starts with a capital letter.
"""
from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[2] / "data_recipes"
CAPTIONS_PER_CLIP = 5
MIN_WORDS, MAX_WORDS = 6, 20
BACKGROUND_DB = 4.0  # a part at least this much quieter is captioned as "in the background"
PAUSE_CAPTION_MIN_GAP_S = 0.5  # "after a short pause" only when there is an audible one


@dataclass(frozen=True)
class SoundClass:
    name: str
    category: str
    clauses: list[str]  # "a dog barks"
    gerunds: list[str]  # "a dog barking"
    nouns: list[str]  # "the barking of a dog"
    words: list[str]  # what names the source in a predicted caption


def expand_words(words: list[str], shared: dict[str, list[str]]) -> list[str]:
    out = []
    for word in words:
        out += shared[word[1:]] if word.startswith("$") else [word]
    return sorted(set(out))


def instrument_class(folder: str, name: str, verb: str, music_words: list[str]) -> SoundClass:
    played = {"bows": "bowed", "plucks": "plucked", "blows": "played"}[verb]
    return SoundClass(
        f"instrument_{folder.replace(' ', '_')}", "music",
        clauses=[f"a {name} plays", f"someone plays a {name}", f"a {name} is {played}"],
        gerunds=[f"a {name} playing", f"someone playing a {name}"],
        nouns=[f"the sound of a {name}", f"a note on a {name}"],
        words=sorted(set(music_words) | {name, *name.split()[-1:]}),
    )


def load_classes(recipes: Path = RECIPES) -> dict[str, SoundClass]:
    """Every class the builder knows: ESC-50's and those of everyday_classes.yaml."""
    everyday = yaml.safe_load((recipes / "everyday_classes.yaml").read_text(encoding="utf-8"))
    esc_phrases = yaml.safe_load((recipes / "esc50_clauses.yaml").read_text(encoding="utf-8"))
    esc_words = yaml.safe_load((recipes / "source_synonyms.yaml").read_text(encoding="utf-8"))
    shared = {"speech": everyday["speech_words"], "music": everyday["music_words"],
              "singing": everyday["singing_words"]}
    classes = {name: SoundClass(name, category, esc_phrases[name]["clauses"], esc_phrases[name]["gerunds"],
                                esc_phrases[name]["nouns"], esc_words[name])
               for name, category in everyday["esc50"].items()}
    for name, entry in everyday["classes"].items():
        classes[name] = SoundClass(name, entry["category"], entry["clauses"], entry["gerunds"], entry["nouns"],
                                   expand_words(entry["words"], shared))
    for folder, (name, verb) in everyday["instruments"].items():
        cls = instrument_class(folder, name, verb, shared["music"])
        classes[cls.name] = cls
    return classes


def load_instruments(recipes: Path = RECIPES) -> dict[str, list[str]]:
    """Philharmonia folder -> [name in captions, how it is played] (everyday_classes.yaml)."""
    return yaml.safe_load((recipes / "everyday_classes.yaml").read_text(encoding="utf-8"))["instruments"]


def load_written_captions(path: Path) -> dict[str, list[str]]:
    """ESC-50 captions written for this project, per category (data_recipes/esc50_captions.csv)."""
    captions: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["category"], []).append(row["caption"].strip())
    return captions


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def n_words(text: str) -> int:
    return len(text.split())


# ----------------------------------------------------------------------------- single sources

SINGLE = [
    "{c}",
    "{c} {d}",
    "{g} can be heard {d}",
    "the sound of {g} is heard",
    "{n} can be heard {d}",
    "in this recording, {c}",
    "there is {n} in this recording",
    "{g} is heard clearly",
]


def duration_phrases(seconds: float) -> list[str]:
    if seconds < 1.5:
        return ["briefly", "for a moment"]
    if seconds < 6:
        return ["for a few seconds", "for a short while"]
    return ["for several seconds", "for a while"]


def instrument_clause(cls: SoundClass, detail: dict) -> list[str]:
    """`a cello plays a long note softly`, from the Philharmonia labels of this very file."""
    name = cls.clauses[0].removeprefix("a ").removesuffix(" plays")
    length = detail.get("length", "")
    what = ("a short melodic phrase" if length == "phrase" else "a long note" if length in ("long", "very-long")
            else "a short note" if length in ("025", "05") else "a single note")
    how = {"pianissimo": " very softly", "piano": " softly", "forte": " loudly", "fortissimo": " very loudly"}
    manner = how.get(detail.get("dynamic", ""), "")
    return [f"a {name} plays {what}{manner}", f"someone plays {what} on a {name}{manner}"]


def single_captions(cls: SoundClass, seconds: float, rng: random.Random, detail: dict | None = None) -> list[str]:
    """CAPTIONS_PER_CLIP distinct captions of one source, each 6-20 words."""
    clauses = instrument_clause(cls, detail) if detail and cls.name.startswith("instrument_") else cls.clauses
    options = set()
    for template in SINGLE:
        for c in clauses:
            for g in cls.gerunds:
                for n in cls.nouns:
                    for d in duration_phrases(seconds):
                        text = template.format(c=c, g=g, n=n, d=d)
                        if MIN_WORDS <= n_words(text) <= MAX_WORDS:
                            options.add(sentence(text))
    options = sorted(options)
    if len(options) < CAPTIONS_PER_CLIP:
        raise ValueError(f"class {cls.name}: only {len(options)} single-source captions of 6-20 words")
    return rng.sample(options, CAPTIONS_PER_CLIP)


# ---------------------------------------------------------------------------------- mixtures

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


def fill(template: str, a: SoundClass, b: SoundClass, rng: random.Random,
         events: bool = False, b_quiet: bool = False) -> str:
    """Fill a template with phrases of parts `a` and `b`. `events`: the caption narrates one
    event after another, where a progressive clause reads badly ("first a dog barks, and then a
    cow is mooing"). `b_quiet`: `b` is the background, so it must not be described as loud."""
    a_avoid = _PROGRESSIVE if events else None
    b_avoid = _PROGRESSIVE if events else _LOUD if b_quiet else None
    return sentence(template.format(
        a=pick(a.clauses, rng, a_avoid), b=pick(b.clauses, rng, b_avoid),
        ga=pick(a.gerunds, rng, a_avoid), gb=pick(b.gerunds, rng, b_avoid),
        na=pick(a.nouns, rng, a_avoid), nb=pick(b.nouns, rng, b_avoid),
    ))


def fill_captions(templates: list[str], rng: random.Random, make) -> list[str]:
    """CAPTIONS_PER_CLIP captions of 6-20 words from different templates (`make(template)`)."""
    captions = []
    for template in rng.sample(templates, len(templates)):
        for _ in range(4):  # a few draws of phrases before giving up on a template
            text = make(template)
            if MIN_WORDS <= n_words(text) <= MAX_WORDS and text not in captions:
                captions.append(text)
                break
        if len(captions) == CAPTIONS_PER_CLIP:
            return captions
    raise ValueError(f"only {len(captions)} mixture captions of 6-20 words from {templates[0]!r}...")


def mixture_captions(kind: str, first: SoundClass, second: SoundClass, gain_db: float, gap_s: float,
                     rng: random.Random) -> list[str]:
    """Captions of a two-part mixture. `gain_db`: level of `second` relative to `first` (both
    loudness-matched first); `gap_s`: silence between the parts of a sequence."""
    if kind == "sequence":
        templates = ONE_AFTER_ANOTHER + (AFTER_A_PAUSE if gap_s >= PAUSE_CAPTION_MIN_GAP_S else [])
        return fill_captions(templates, rng, lambda t: fill(t, first, second, rng, events=True))
    if abs(gain_db) >= BACKGROUND_DB:
        loud, quiet = (first, second) if gain_db < 0 else (second, first)
        return fill_captions(WITH_BACKGROUND, rng, lambda t: fill(t, loud, quiet, rng, b_quiet=True))

    def either_order(template: str) -> str:  # comparable loudness: either may be named first
        a, b = (first, second) if rng.random() < 0.5 else (second, first)
        return fill(template, a, b, rng)

    return fill_captions(SIMULTANEOUS, rng, either_order)
