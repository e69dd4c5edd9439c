"""Frames of a frozen audio encoder, computed once per audio file and reused across runs.

Layout: `root/<encoder name>-<key>/<audio key>.npy`, one float32 (T, D) array per audio file.

* `<key>` hashes the encoder's name, `weights_hash()` and `config()` (front-end settings
  included): new weights or settings get a new folder, so stale frames are never read, and an
  old folder can be deleted as a whole. `encoder.json` in the folder says what it was made from.
* `<audio key>` hashes the audio file's identity: its resolved path, size and mtime (`"stat"`,
  free to compute, invalidated by any rewrite of the file), or its bytes (`"content"`, survives
  moves and copies at the cost of reading each file once per run).

Why one `.npy` per entry rather than one HDF5 file: an entry is written to a temporary file
and renamed over its final name (`os.replace`, atomic on POSIX and Windows), so a killed run
leaves at worst an orphan `*.tmp` (never read, safe to delete) and never a half-written entry;
any number of processes and DataLoader workers can read and write at once without locks (two
writers of one entry write identical bytes); and entries are memory-mapped, so a dataset's
features need not fit in RAM. A single HDF5 file allows one writer at a time and can be left
corrupt, as a whole, by a writer killed mid-flush.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm

from audiocap.audio import load_audio
from audiocap.encoders.base import AudioEncoder
from audiocap.errors import AudioLoadError, DataError

FileIdentity = Literal["stat", "content"]


def audio_key(audio_path: Path, identity: FileIdentity = "stat") -> str:
    try:
        if identity == "content":
            with open(audio_path, "rb") as f:
                return hashlib.file_digest(f, "sha1").hexdigest()
        stat = os.stat(audio_path)
    except FileNotFoundError:
        raise AudioLoadError(f"{audio_path}: no such file; `audiocap validate` lists every missing file") from None
    return hashlib.sha1(f"{Path(audio_path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()


# 2: each file's frames computed as if alone (version 1 padded a batch of files, which changed short clips' last frames)
CACHE_FORMAT = 2


def encoder_key(encoder: AudioEncoder) -> dict:
    return {"name": encoder.name, "weights_hash": encoder.weights_hash(), "config": encoder.config(),
            "format": CACHE_FORMAT}


def save_atomic(path: Path, data: bytes | np.ndarray) -> None:
    """Write to a temporary file in the same folder, then rename it over `path`.

    No fsync: this guards against killed processes, not power loss, and an fsync per entry
    would dominate the cost of filling a cache of small entries.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as err:
        raise DataError(f"{path.parent}: cannot write the feature cache ({err.strerror}); fix it or set cache_dir") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, np.ndarray):
                np.save(f, data)
            else:
                f.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError):  # a full disk: one line, and no partial entry left behind
            raise DataError(f"{path}: cannot write the feature cache ({err.strerror}); free space or set "
                            "cache_dir to another disk") from None
        raise


def encode_files(encoder: AudioEncoder, audio_paths: Sequence[Path]) -> list[np.ndarray]:
    """Frames (T_i, D) float32 of each file in eval mode, each as if encoded alone (AudioEncoder.encode_clips):
    a file's entry never depends on the files it was computed with."""
    waveforms = [load_audio(p, encoder.sample_rate) for p in audio_paths]
    was_training = encoder.training
    encoder.eval()  # dropout or batch statistics in cached frames would freeze noise into them
    try:
        with torch.inference_mode():
            frames = encoder.encode_clips(waveforms)
    finally:
        encoder.train(was_training)
    return [f.cpu().numpy() for f in frames]


class FeatureCache:
    """Frames of frozen encoders under `root`; `identity` says how an audio file is recognised."""

    def __init__(self, root: str | os.PathLike, identity: FileIdentity = "stat"):
        self.root = Path(root)
        self.identity = identity

    def encoder_dir(self, encoder: AudioEncoder) -> Path:
        key = encoder_key(encoder)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        directory = self.root / f"{encoder.name}-{digest}"
        if not (directory / "encoder.json").exists():
            directory.mkdir(parents=True, exist_ok=True)
            save_atomic(directory / "encoder.json", json.dumps(key, indent=2, default=str).encode())
        return directory

    def cached(self, encoder: AudioEncoder, audio_paths: Sequence[Path]) -> set[Path]:
        """The paths whose frames are stored (so they decoded when stored, and are unchanged since)."""
        directory = self.encoder_dir(encoder)
        return {p for p in audio_paths if p.is_file() and (directory / f"{audio_key(p, self.identity)}.npy").exists()}

    def fill(self, encoder: AudioEncoder, audio_paths: Sequence[str | os.PathLike], batch_size: int = 8,
             progress: bool = True) -> list[Path]:
        """The entry file of each audio file, computing the missing ones in batches."""
        directory = self.encoder_dir(encoder)  # hashes the weights: once per call, not per file
        entries = [directory / f"{audio_key(Path(p), self.identity)}.npy" for p in audio_paths]
        todo = {entry: Path(path) for path, entry in zip(audio_paths, entries) if not entry.exists()}
        # files of one size are likely of one length, and clips of one length share a forward pass
        order = sorted(todo, key=lambda entry: os.path.getsize(todo[entry]))
        with tqdm(total=len(order), desc=f"encoding with {encoder.name}", unit="file", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                for entry, frames in zip(batch, encode_files(encoder, [todo[e] for e in batch])):
                    if not np.isfinite(frames).all():  # never stored: every later run would train on them
                        raise AudioLoadError(f"{todo[entry]}: the encoder's frames of it are not finite; check the "
                                             "file (`audiocap validate`) and the encoder's weights")
                    save_atomic(entry, frames)
                bar.update(len(batch))
        return entries

    def get(self, encoder: AudioEncoder, audio_path: str | os.PathLike) -> np.ndarray:
        """Frames (T, D) float32 of one file (computed and stored on a miss)."""
        return np.load(self.fill(encoder, [audio_path], progress=False)[0])

    def get_many(self, encoder: AudioEncoder, audio_paths: Sequence[str | os.PathLike], batch_size: int = 8,
                 progress: bool = True) -> list[np.ndarray]:
        """Frames of each file, memory-mapped read-only so that a whole dataset need not fit in RAM."""
        return [np.load(e, mmap_mode="r") for e in self.fill(encoder, audio_paths, batch_size, progress)]
