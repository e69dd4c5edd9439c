"""PANNs CNN10 and CNN14 (Kong et al., 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks
for Audio Pattern Recognition"), laid out so that the official checkpoints (Zenodo record 3987831,
`Cnn10_mAP=0.380.pth`, `Cnn14_mAP=0.431.pth`) load strictly and give the same outputs.

    log-mel (B, T, 64) ─bn0─▶ ConvBlock ×4 (CNN10) or ×6 (CNN14), 2×2 average pooling between
    ─mean over mel─▶ frames (B, T / 2^pools, channels)     ← what the captioner consumes
    ─max + mean over time─▶ fc1 ─▶ fc_audioset ─▶ sigmoid  ← clip-level AudioSet tags (527)

CNN10: 512-d frames at 6.25 frames/s; CNN14: 2048-d frames at 3.125 frames/s (32 kHz, hop 320).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from audiocap.mel import PANNS_MEL, MelSettings, log_mel_spectrogram, mel_filters
from audiocap.encoders.base import AudioEncoder
from audiocap.encoders.checkpoint import NUMPY_ARRAYS, load_checkpoint, load_state_dict_strict
from audiocap.errors import CheckpointError

CNN10_CHANNELS = (64, 128, 256, 512)
CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
AUDIOSET_CLASSES = 527


class ConvBlock(nn.Module):
    """Two 3×3 conv → batch norm → ReLU layers, then pooling (VGG-like; PANNs and the DCASE baselines)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)  # PANNs' init (matters for scratch-cnn10 only)

    def forward(self, x: torch.Tensor, pool_size: int = 2, pool: str = "avg") -> torch.Tensor:
        # x: (B, C_in, T, F) -> (B, C_out, T // pool_size, F // pool_size)
        # On a CPU, oneDNN runs these convolutions faster on channels-last (NHWC) memory while the maps are
        # large, slower once they are small and deep: channels-last up to 256 input channels is faster for
        # Cnn10, Cnn14 and aisfx (docs/BENCHMARKS.md, "Audio front end and encoders"). Values change by float
        # rounding (~1e-6).
        if x.device.type == "cpu":  # back to NCHW for the deep blocks: the layout carries over between blocks
            x = x.contiguous(memory_format=torch.channels_last if self.conv1.in_channels <= 256 else
                             torch.contiguous_format)
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        if pool_size == 1:
            return x
        return F.avg_pool2d(x, pool_size) if pool == "avg" else F.max_pool2d(x, pool_size)


def dft_kernels(settings: MelSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa's STFT-as-Conv1d kernels: Hann-windowed DFT rows, each (n_fft // 2 + 1, 1, n_fft)."""
    n = torch.arange(settings.n_fft, dtype=torch.float64)
    k = torch.arange(settings.n_fft // 2 + 1, dtype=torch.float64)
    phase = 2 * math.pi * k[:, None] * n[None, :] / settings.n_fft
    window = torch.hann_window(settings.n_fft, periodic=True, dtype=torch.float64)
    return (torch.cos(phase) * window)[:, None].float(), (-torch.sin(phase) * window)[:, None].float()


def _holder(name: str, tensor: torch.Tensor) -> nn.Module:
    module = nn.Module()
    module.register_buffer(name, tensor)
    return module


class Spectrogram(nn.Module):
    """Keeps the official `spectrogram_extractor.stft.conv_{real,imag}.weight` tensors so checkpoints
    load strictly. They are checked, not used: `torch.stft` computes the same transform ~20× faster."""

    def __init__(self, settings: MelSettings):
        super().__init__()
        real, imag = dft_kernels(settings)
        self.stft = nn.Module()
        self.stft.conv_real = _holder("weight", real)
        self.stft.conv_imag = _holder("weight", imag)

    def check(self, settings: MelSettings, path: str | Path) -> None:
        real, imag = dft_kernels(settings)
        if not (torch.allclose(self.stft.conv_real.weight, real, atol=1e-4)
                and torch.allclose(self.stft.conv_imag.weight, imag, atol=1e-4)):
            raise CheckpointError(f"{path}: its STFT kernels are not a {settings.n_fft}-point Hann DFT, so it was "
                                  f"trained with other front-end settings; use a 32 kHz PANNs checkpoint")


class LogmelFilterBank(nn.Module):
    """Holds the mel filter bank `melW` (n_fft // 2 + 1, n_mels) under its official name."""

    def __init__(self, settings: MelSettings):
        super().__init__()
        self.register_buffer("melW", torch.from_numpy(mel_filters(settings)).float())


class PannsCnn(AudioEncoder):
    """A PANNs CNN: `channels` per ConvBlock; every block but CNN14's last halves time and mel."""

    sample_rate = PANNS_MEL.sample_rate

    def __init__(self, name: str, channels: tuple[int, ...], pool_last_block: bool,
                 classes: int = AUDIOSET_CLASSES, mel: MelSettings = PANNS_MEL):
        super().__init__()
        self.name, self.mel, self.pool_last_block = name, mel, pool_last_block
        self.options = {"channels": list(channels)}
        self.dropout = 0.2  # after every conv block, in training mode only (PANNs' value); not an output setting
        self.pools = len(channels) if pool_last_block else len(channels) - 1  # number of 2× downsamplings
        self.frame_rate = mel.sample_rate / mel.hop_length / 2 ** self.pools
        self.dim = channels[-1]

        self.spectrogram_extractor = Spectrogram(mel)
        self.logmel_extractor = LogmelFilterBank(mel)
        self.bn0 = nn.BatchNorm2d(mel.n_mels)
        for i, (c_in, c_out) in enumerate(zip((1,) + tuple(channels), channels)):
            self.add_module(f"conv_block{i + 1}", ConvBlock(c_in, c_out))
        self.fc1 = nn.Linear(self.dim, self.dim)
        self.fc_audioset = nn.Linear(self.dim, classes)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @property
    def blocks(self) -> list[ConvBlock]:
        return [getattr(self, f"conv_block{i + 1}") for i in range(len(self.options["channels"]))]

    def config(self) -> dict:
        return {**super().config(), "front_end": vars(self.mel).copy(), "pool_last_block": self.pool_last_block}

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        spectrogram_frames = 1 + torch.div(lengths, self.mel.hop_length, rounding_mode="floor")
        return torch.div(spectrogram_frames, 2 ** self.pools, rounding_mode="floor").clamp(min=1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # waveforms: (B, N) at 32 kHz -> frames (B, T', dim), T' = (1 + N // 320) // 2^pools
        shortest = self.mel.hop_length * (2 ** self.pools - 1)  # pooling needs 2^pools spectrogram frames
        if waveforms.shape[1] < shortest:
            waveforms = F.pad(waveforms, (0, shortest - waveforms.shape[1]))
        x = log_mel_spectrogram(waveforms, self.mel, filters=self.logmel_extractor.melW)  # (B, T, n_mels)
        x = self.bn0(x[:, None].transpose(1, 3)).transpose(1, 3)  # normalise each mel band: (B, 1, T, n_mels)
        for i, block in enumerate(self.blocks):
            pooled = i < len(self.blocks) - 1 or self.pool_last_block
            x = F.dropout(block(x, pool_size=2 if pooled else 1), p=self.dropout, training=self.training)
        frames = x.mean(dim=3).transpose(1, 2)  # (B, T', channels): average over the remaining mel axis
        return frames, self.frame_lengths(lengths).clamp(max=frames.shape[1])

    def tag(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """AudioSet class probabilities (B, classes) from `forward`'s frames, padding excluded."""
        valid = (torch.arange(frames.shape[1], device=frames.device) < frame_lengths[:, None])[..., None]
        peak = frames.masked_fill(~valid, float("-inf")).amax(dim=1)  # (B, dim)
        mean = (frames * valid).sum(dim=1) / frame_lengths[:, None].to(frames.dtype)
        x = F.dropout(peak + mean, p=0.5, training=self.training)
        x = F.relu_(self.fc1(x))
        return torch.sigmoid(self.fc_audioset(x))

    def load_official(self, path: str | Path, fix: str) -> "PannsCnn":
        """Load a release checkpoint `{'iteration': int, 'model': state_dict, 'sampler': ...}` strictly.

        Its 'sampler' entry (the training sampler's state: lists of int64 numpy arrays and ints) is
        why numpy arrays are allow-listed; nothing else is unpickled.
        """
        checkpoint = load_checkpoint(path, NUMPY_ARRAYS, fix)
        state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path}: expected a dict with a 'model' state dict. {fix}")
        load_state_dict_strict(self, state_dict, path, fix)
        self.spectrogram_extractor.check(self.mel, path)
        return self


def audioset_labels() -> list[str]:
    """The 527 AudioSet class names in model output order (bundled class_labels_indices.csv)."""
    text = resources.files("audiocap").joinpath("assets/audioset_labels.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return [row["display_name"] for row in sorted(rows, key=lambda row: int(row["index"]))]


def _build(name: str, channels, pool_last_block: bool, checkpoint, pretrained: bool, release: str) -> PannsCnn:
    encoder = PannsCnn(name, tuple(channels), pool_last_block)
    if checkpoint is not None:
        fix = f"download {release} (Zenodo record 3987831: `audiocap download {name}`) and pass its path"
        encoder.load_official(checkpoint, fix)
    elif pretrained:
        raise CheckpointError(f"{name} needs the official checkpoint {release}: run `audiocap download {name}` "
                              f"and pass --checkpoint PATH (or checkpoint=PATH); the `aisfx` encoder needs no download")
    return encoder


def panns_cnn10(checkpoint=None, pretrained: bool = True, channels=CNN10_CHANNELS) -> PannsCnn:
    return _build("panns-cnn10", channels, True, checkpoint, pretrained, "Cnn10_mAP=0.380.pth")


def panns_cnn14(checkpoint=None, pretrained: bool = True, channels=CNN14_CHANNELS) -> PannsCnn:
    return _build("panns-cnn14", channels, False, checkpoint, pretrained, "Cnn14_mAP=0.431.pth")


def scratch_cnn10(checkpoint=None, pretrained: bool = False, channels=CNN10_CHANNELS) -> PannsCnn:
    return _build("scratch-cnn10", channels, True, checkpoint, False, "a checkpoint")
