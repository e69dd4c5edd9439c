"""What GET /v1/model tells about the loaded model: its name, version, sample rate, limits, and what it
knows — the model card's sections for the bundled model, the training data recorded in any model file."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import audiocap
from audiocap.model_file import read_model_info
from audiocap.caption import DEFAULT_MODEL

MODEL_CARD = DEFAULT_MODEL.parent / "MODEL_CARD.md"


def describe_model(pipeline, path: Path | None) -> dict:
    path = Path(path) if path is not None else DEFAULT_MODEL
    bundled = path.resolve() == DEFAULT_MODEL.resolve()
    info = read_model_info(path)
    training = info.get("training") or {}
    config = training.get("config") or {}
    description = {
        "name": path.name,
        "bundled": bundled,
        "version": file_digest(path)[:12],  # what identifies these weights; the file name may be reused
        "audiocap_version": audiocap.__version__,
        "written_by_audiocap": info.get("audiocap_version"),
        "sample_rate": pipeline.sample_rate,
        "max_seconds": round(pipeline.max_seconds, 1),
        "encoder": info["encoder"]["name"],
        "decoder_precision": pipeline.precision,
        "vocabulary_size": len(pipeline.tokenizer.itos),
        "trained_on": {key: config[key] for key in ("train_csv", "val_csv") if key in config},
        "model_card": model_card_sections(MODEL_CARD.read_text(encoding="utf-8")) if bundled and MODEL_CARD.is_file()
        else None,
    }
    return description


def model_card_sections(text: str) -> dict[str, str]:
    """The card's paragraphs that open with a bold title (`**What it is.** ...`), and the prose of its
    `## ` sections (`## What it knows`), by title; tables are left out."""
    sections: dict[str, str] = {}
    heading = None
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if paragraph.startswith("## "):
            heading = paragraph[3:].strip()
            continue
        match = re.match(r"\*\*([^*]+?)\.?\*\*\s*(.*)", paragraph, re.S)
        if match and match.group(2):
            sections[match.group(1)] = " ".join(match.group(2).split())
        elif heading and paragraph and not paragraph.startswith(("|", "#")):
            prose = " ".join(paragraph.split())  # a section's paragraphs stay apart: "\n\n" between them
            sections[heading] = f"{sections[heading]}\n\n{prose}" if heading in sections else prose
    return sections


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
