"""The aiSFX encoder (Ma, Iturregui, Wang, Fazekas, ISMIR 2021, "Cross-dataset sound event
representations"; PyPI `aisfx`, weights CC BY 4.0): a 4-block CNN trained across sound-effects
libraries, whose weights ship inside the wheel, so it is the pretrained encoder available offline.

    waveform @ 44.1 kHz ─▶ mel (96 HTK bands, 2048/1024) ─▶ log10(1e4·x + 1) / 9.458
    ─▶ blocks of 100 frames (2.3 s) every `block_hop` frames
    ─▶ ConvBlock ×4 (max pooling) ─▶ mean over mel, max over time ─▶ one 512-d frame per block

Only the checkpoint file is used (found with importlib; the package is never imported, it pins
old librosa/numpy: `pip install --no-deps aisfx`). The front end follows the paper's essentia
one (`spectrogram_essentia.py`): unnormalised level, centred zero-padded symmetric-Hann frames,
HTK mel bands of unit sum, power, shift-scale log, min-max scaling by the training maximum. The
mel triangles are drawn in Hz (as librosa does), not in mels as essentia's "warping" weighting.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audiocap.mel import MelSettings, mel_filters, power_spectrogram
from audiocap.encoders.base import AudioEncoder
from audiocap.encoders.checkpoint import NUMPY_INT64_SCALARS, load_checkpoint, load_state_dict_strict
from audiocap.encoders.panns import ConvBlock
from audiocap.errors import CheckpointError

AISFX_MEL = MelSettings(sample_rate=44100, n_fft=2048, hop_length=1024, n_mels=96, f_min=0.0, f_max=22050.0,
                        mel_scale="htk", mel_norm="unit_sum", periodic_window=False, pad_mode="constant")
LOG_SPECTROGRAM_MAX = 9.457798957824707  # aisfx "original" normalisation: max over its training spectrograms
CHANNELS = (64, 128, 256, 512)  # EmbeddingNet('max', 3, 1, 64)
INSTALL_HINT = "`pip install --no-deps aisfx` (its weights ship in the wheel) or pass checkpoint=PATH / --checkpoint PATH"


def aisfx_spectrogram(waveform: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(..., N) at 44.1 kHz -> (..., T, 96) scaled log-mel in [0, ~1], T = 1 + N // 1024."""
    mel = power_spectrogram(waveform, AISFX_MEL) @ filters
    return torch.log10(1e4 * mel + 1.0) / LOG_SPECTROGRAM_MAX


class EmbeddingNet(nn.Module):
    """The DCASE 2018 cross-task baseline CNN (`conv_block1..4`, max pooling) used by aisfx."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        self.depth = len(channels)
        for i, (c_in, c_out) in enumerate(zip((1,) + tuple(channels), channels)):
            self.add_module(f"conv_block{i + 1}", ConvBlock(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (n, frames, mels) -> (n, channels[-1]); the last block does not pool
        x = x[:, None]
        for i in range(self.depth):
            x = getattr(self, f"conv_block{i + 1}")(x, pool_size=2 if i < self.depth - 1 else 1, pool="max")
        return x.mean(dim=3).amax(dim=2)


class AisfxEncoder(AudioEncoder):
    """Frame t embeds spectrogram frames [t·block_hop, t·block_hop + block_frames), as aisfx blocks
    them: the first frame needs one whole block (2.3 s), then one frame per hop follows; a clip of
    N samples has 1 + ceil((1 + N // 1024 - block_frames) / block_hop) frames (at least one).
    With the default hop (half a block), chunks of `encode_file` tile this grid exactly."""

    name = "aisfx"
    sample_rate = AISFX_MEL.sample_rate

    def __init__(self, block_frames: int = 100, block_hop: int = 50, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        self.block_frames, self.block_hop = block_frames, block_hop
        self.options = {"block_frames": block_frames, "block_hop": block_hop, "channels": list(channels)}
        self.frame_rate = AISFX_MEL.sample_rate / AISFX_MEL.hop_length / block_hop  # 0.86 blocks/s by default
        self.dim = channels[-1]
        self.embedding_net = EmbeddingNet(tuple(channels))
        # derived from the settings, so not part of the state dict
        self.register_buffer("mel_filters", torch.from_numpy(mel_filters(AISFX_MEL)).float(), persistent=False)

    def config(self) -> dict:
        return {**super().config(), "front_end": vars(AISFX_MEL).copy(), "scale": LOG_SPECTROGRAM_MAX}

    def blocks_for(self, spectrogram_frames: torch.Tensor) -> torch.Tensor:
        """Blocks covering `spectrogram_frames` frames (a last partial block is kept, zero-padded)."""
        beyond_first = (spectrogram_frames - self.block_frames).clamp(min=0)
        return 1 + torch.div(beyond_first + self.block_hop - 1, self.block_hop, rounding_mode="floor")

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.blocks_for(1 + torch.div(lengths, AISFX_MEL.hop_length, rounding_mode="floor"))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # waveforms: (B, N) at 44.1 kHz -> frames (B, n_blocks, 512)
        spectrogram = aisfx_spectrogram(waveforms, self.mel_filters)  # (B, T, 96)
        n_blocks = int(self.blocks_for(torch.tensor(spectrogram.shape[1])))
        padded = (n_blocks - 1) * self.block_hop + self.block_frames
        # zero is silence after the log(1e4·x + 1) compression, as in aisfx's own padding
        spectrogram = F.pad(spectrogram, (0, 0, 0, padded - spectrogram.shape[1]))
        blocks = spectrogram.unfold(1, self.block_frames, self.block_hop)  # (B, n_blocks, 96, block_frames)
        blocks = blocks.transpose(2, 3).flatten(0, 1)  # (B · n_blocks, block_frames, 96)
        frames = self.embedding_net(blocks).view(len(waveforms), n_blocks, self.dim)
        return frames, self.frame_lengths(lengths).clamp(max=n_blocks)

    def load_aisfx(self, path: str | Path) -> "AisfxEncoder":
        """Load `aisfx/models/checkpoint.pth`: a pickled tuple (state dict, {dataset: (np.int64 index,
        classes)}). Only the embedding net is kept; the per-dataset classifier heads are dropped."""
        checkpoint = load_checkpoint(path, NUMPY_INT64_SCALARS, INSTALL_HINT)
        if not (isinstance(checkpoint, tuple) and isinstance(checkpoint[0], dict)):
            raise CheckpointError(f"{path}: expected aisfx's (state_dict, heads) tuple; {INSTALL_HINT}")
        embedding = {k: v for k, v in checkpoint[0].items() if k.startswith("embedding_net.")}
        load_state_dict_strict(self, embedding, path, INSTALL_HINT)
        return self


def installed_checkpoint() -> Path:
    """The weights file inside the installed aisfx wheel (the package itself is not imported)."""
    spec = importlib.util.find_spec("aisfx")
    path = Path(spec.submodule_search_locations[0]) / "models" / "checkpoint.pth" if spec else None
    if path is None or not path.is_file():
        raise CheckpointError(f"aisfx weights not found (looked for aisfx/models/checkpoint.pth); {INSTALL_HINT}")
    return path


def aisfx(checkpoint=None, pretrained: bool = True, **options) -> AisfxEncoder:
    encoder = AisfxEncoder(**options)
    if checkpoint is not None or pretrained:
        encoder.load_aisfx(checkpoint if checkpoint is not None else installed_checkpoint())
    return encoder
