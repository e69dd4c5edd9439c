"""Augmentation of encoder frames (cached, or computed in the forward pass when fine-tuning)."""
from __future__ import annotations

import torch


def spec_augment(frames: torch.Tensor, frame_lengths: torch.Tensor, time_masks: int, time_width: int,
                 feature_masks: int, feature_width: int) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) applied to encoder frames (B, T, D) instead of a spectrogram:
    `time_masks` spans of up to `time_width` frames and `feature_masks` spans of up to
    `feature_width` channels are set to zero, independently for every clip."""
    B, T, D = frames.shape
    # The spans are drawn into small CPU masks and applied in one product: per-clip writes into a (B, T, D)
    # device mask would cost a host sync per clip and a kernel per span on a GPU.
    keep_time, keep_feature = torch.ones(B, T, dtype=torch.bool), torch.ones(B, D, dtype=torch.bool)
    for b, length in enumerate(frame_lengths.tolist()):
        for _ in range(time_masks):
            width = int(torch.randint(0, time_width + 1, ()))
            start = int(torch.randint(0, max(1, length - width + 1), ()))
            keep_time[b, start:start + width] = False
        for _ in range(feature_masks):
            width = int(torch.randint(0, feature_width + 1, ()))
            start = int(torch.randint(0, max(1, D - width + 1), ()))
            keep_feature[b, start:start + width] = False
    keep = keep_time[:, :, None] & keep_feature[:, None, :]  # (B, T, D)
    return frames * keep.to(frames.device)


def mixup(frames: torch.Tensor, frame_lengths: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every clip's frames with another clip of the batch, weight λ ~ Beta(α, α) folded to
    λ ≥ 0.5. A caption describes one scene, so the target stays the dominant clip's caption and
    the other clip acts as a background sound."""
    lam = torch.distributions.Beta(alpha, alpha).sample((frames.shape[0], 1, 1)).to(frames)
    lam = torch.maximum(lam, 1 - lam)
    perm = torch.randperm(frames.shape[0], device=frames.device)
    return lam * frames + (1 - lam) * frames[perm], torch.maximum(frame_lengths, frame_lengths[perm])
