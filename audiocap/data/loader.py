"""Training batches from the feature cache: encoder frames, padded, with all captions of each clip.

The dataset holds only entry paths and captions, so it pickles cheaply into DataLoader worker
processes, and each worker reads entries the cache has finished writing (see `cache.py`).
Choosing and tokenizing captions is the training loop's business.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from audiocap.data.cache import FeatureCache
from audiocap.data.datasets import CaptionItem
from audiocap.encoders.base import AudioEncoder


class CachedFeatures(Dataset):
    def __init__(self, entries: list[Path], captions: list[list[str]]):
        self.entries = entries
        self.captions = captions

    @classmethod
    def build(cls, items: list[CaptionItem], cache: FeatureCache, encoder: AudioEncoder, batch_size: int = 8,
              progress: bool = True) -> "CachedFeatures":
        """Encode whatever the cache lacks, then serve `items` from it."""
        entries = cache.fill(encoder, [item.audio_path for item in items], batch_size, progress)
        return cls(entries, [item.captions for item in items])

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        return torch.from_numpy(np.load(self.entries[index])), self.captions[index]


def collate_frames(samples: list[tuple[torch.Tensor, list[str]]]) -> dict:
    """frames (B, T_max, D) zero-padded, frame_lengths (B,), captions: list of each clip's captions."""
    frames = [f for f, _ in samples]
    return {
        "frames": torch.nn.utils.rnn.pad_sequence(frames, batch_first=True),
        "frame_lengths": torch.tensor([len(f) for f in frames]),
        "captions": [c for _, c in samples],
    }
