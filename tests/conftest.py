"""Shared fixtures. Real data lives in ../shared/data (see its README); the package never reads it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUDIOCAP_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
CLOTHO_VALIDATION_AUDIO = SHARED_DATA / "clotho" / "audio" / "validation"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():  # fail loudly: a skipped test proves nothing
        raise FileNotFoundError(f"shared test data not found at {SHARED_DATA}; set AUDIOCAP_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def clotho_clips(shared_data) -> list[Path]:
    return sorted(CLOTHO_VALIDATION_AUDIO.glob("*.wav"))
