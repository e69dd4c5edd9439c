"""Training checkpoints: written atomically, read with weights_only=True (no arbitrary code on load), and the
random-number states a resumed run needs to continue exactly."""
from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

import numpy as np
import torch

from audiocap.encoders.checkpoint import load_checkpoint as load_tensors_only
from audiocap.errors import CheckpointError, ConfigError


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file then rename: a crash mid-write never leaves a truncated checkpoint, and a full
    disk is one CheckpointError that leaves no partial file (the previous checkpoint stays)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0][:200]
        raise CheckpointError(f"{path}: cannot write the checkpoint ({reason}); free space and resume with "
                              "--resume (the previous checkpoint is intact)") from None


def lock_out_dir(out_dir: Path):
    """An exclusive lock on `out_dir` for this run (released when the process ends, also when killed): a second
    run on the same out_dir would overwrite the first one's checkpoints. Returns the open lock file to keep."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = open(out_dir / "train.lock", "a+")
    key = os.fstat(lock.fileno())[1:3]  # (inode, device): the same lock file, also after out_dir moved
    if key in _HELD_LOCKS:  # an earlier run of this process (returned or raised) still holds it
        _HELD_LOCKS.pop(key).close()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "?"
        lock.close()
        raise ConfigError(f"out_dir {out_dir}: another training run (pid {owner}) is using it; wait for it to end, "
                          "or set out_dir to another folder") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _HELD_LOCKS[key] = lock
    return lock


_HELD_LOCKS: dict = {}  # (inode, device) -> lock file this process holds


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
