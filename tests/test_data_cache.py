"""Feature cache: computed once, reused, invalidated by any key part, atomic, readable by workers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader

from audiocap.data import cache as cache_module
from audiocap.data.cache import FeatureCache
from audiocap.encoders.base import AudioEncoder
from audiocap.errors import AudioLoadError


class FrameStats(AudioEncoder):
    """A tiny encoder: per 0.1 s frame, the mean and peak of the waveform times a weight."""

    name = "frame-stats"
    sample_rate = 8000
    frame_rate = 10.0
    dim = 2

    def __init__(self, weight: float = 1.0, hop: int = 800):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight))
        self.hop = hop
        self.clips_encoded = 0

    def config(self) -> dict:
        return {**super().config(), "hop": self.hop}

    def forward(self, waveforms, lengths):
        self.clips_encoded += len(waveforms)
        usable = waveforms[:, : waveforms.shape[1] // self.hop * self.hop].unflatten(1, (-1, self.hop))
        frames = torch.stack([usable.mean(-1), usable.abs().amax(-1)], -1) * self.weight
        return frames, torch.div(lengths, self.hop, rounding_mode="floor").clamp(min=1)


@pytest.fixture
def clips(tmp_path, clotho_clips):
    """Copies of three real clips, so that tests may touch and rewrite them."""
    folder = tmp_path / "audio"
    folder.mkdir()
    return [Path(shutil.copy(clip, folder / clip.name)) for clip in clotho_clips[:3]]


def test_second_get_is_a_cache_hit_across_instances(tmp_path, clips):
    encoder = FrameStats()
    first = FeatureCache(tmp_path / "cache").get_many(encoder, clips, batch_size=2, progress=False)
    assert encoder.clips_encoded == 3
    again = FeatureCache(tmp_path / "cache").get_many(encoder, clips, progress=False)  # as a new run would
    assert encoder.clips_encoded == 3
    for a, b, clip in zip(first, again, clips):
        assert a.dtype == np.float32 and a.shape[1] == 2 and np.array_equal(a, b)
        seconds = soundfile.info(clip).duration
        assert abs(len(a) - seconds * 10) <= 1  # padding frames of the batch are not stored
    assert np.array_equal(FeatureCache(tmp_path / "cache").get(encoder, clips[0]), first[0])
    assert encoder.clips_encoded == 3


def test_batched_frames_equal_one_by_one_frames(tmp_path, clips):
    batched = FeatureCache(tmp_path / "a").get_many(FrameStats(), clips, batch_size=3, progress=False)
    single = [FeatureCache(tmp_path / "b").get(FrameStats(), clip) for clip in clips]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("change", ["weights", "config"])
def test_new_weights_or_settings_invalidate(tmp_path, clips, change):
    cache = FeatureCache(tmp_path / "cache")
    old = cache.get(FrameStats(), clips[0])
    encoder = FrameStats(weight=2.0) if change == "weights" else FrameStats(hop=400)
    new = cache.get(encoder, clips[0])
    assert encoder.clips_encoded == 1 and not np.array_equal(old, new)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_rewritten_audio_invalidates_by_stat_and_moved_audio_hits_by_content(tmp_path, clips):
    encoder = FrameStats()
    by_stat, by_content = FeatureCache(tmp_path / "stat"), FeatureCache(tmp_path / "content", identity="content")
    by_stat.get(encoder, clips[0]), by_content.get(encoder, clips[0])
    assert encoder.clips_encoded == 2

    shutil.copy(clips[1], clips[0])  # new content at the same path
    by_stat.get(encoder, clips[0]), by_content.get(encoder, clips[0])
    assert encoder.clips_encoded == 4

    moved = clips[0].rename(tmp_path / "moved.wav")  # same content elsewhere: only content identity knows
    by_content.get(encoder, moved)
    assert encoder.clips_encoded == 4
    os.utime(moved, ns=(0, 0))
    by_stat.get(encoder, moved)
    assert encoder.clips_encoded == 5


def test_a_killed_write_leaves_no_entry(tmp_path, clips, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    cache, encoder = FeatureCache(tmp_path / "cache"), FrameStats()
    monkeypatch.setattr(cache_module.np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.get(encoder, clips[0])
    monkeypatch.undo()
    (folder,) = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json"]  # no entry, no temporary file
    cache.get(encoder, clips[0])
    assert encoder.clips_encoded == 2  # recomputed, not read half-written


def test_dataloader_workers_read_padded_batches(tmp_path, clips):
    """The training loop's data path: memory-mapped entries, padded by `train.collate`, read by workers."""
    from audiocap.batches import collate

    encoder = FrameStats()
    frames = FeatureCache(tmp_path / "cache").get_many(encoder, clips, progress=False)
    pairs = [(f, [4 + i]) for i, f in enumerate(frames)]
    batches = list(DataLoader(pairs, batch_size=2, num_workers=2, collate_fn=collate))
    assert encoder.clips_encoded == 3  # workers only read
    read = torch.cat([f[:n] for b in batches for f, n in zip(b[0], b[1])])
    assert torch.equal(read, torch.cat([torch.from_numpy(np.array(f)) for f in frames]))
    assert batches[0][0].shape[0] == 2 and batches[0][3][1].tolist() == [5, 2]  # w, <eos>


def test_missing_audio_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(AudioLoadError, match="gone.wav: no such file; `audiocap validate`"):
        FeatureCache(tmp_path).get(FrameStats(), tmp_path / "gone.wav")
