"""Training checkpoints: written atomically, read with weights_only=True (no arbitrary code on load), and the
random-number states a resumed run needs to continue exactly."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from audiocap.encoders.checkpoint import load_checkpoint as load_tensors_only
from audiocap.errors import CheckpointError


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file then rename: a crash mid-write never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint `save_checkpoint` wrote: tensors and plain values only (weights_only=True), so a file
    holding anything else is refused rather than unpickled."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from; train without --resume first")
    return load_tensors_only(path, allowed_globals=[], fix="Delete it or restore a backup.")


def rng_state() -> dict:
    """Python, NumPy and torch random states, in types that `weights_only` loading accepts."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
