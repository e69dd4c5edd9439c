"""Where a training batch's frames come from, behind one interface, so that the training loop has no branch
on it:

- `CachedFrames`: a frozen encoder's frames, computed once through the feature cache; a batch holds them.
- `FineTunedEncoder`: a batch holds waveforms, and the encoder (training with the captioner) turns them into
  frames in the forward pass.

Both: `source(inputs, lengths) -> (frames (B, T, D), frame_lengths (B,))`, `source.train()` before an epoch,
`source.validation_frames(items)` (each clip whole, as the model file will caption it), `param_groups(...)`
(what trains besides the captioner) and `state_dict()` / `load_state_dict(...)` (for checkpoints).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from audiocap.audio import audio_duration, load_audio
from audiocap.distributed import Distributed
from audiocap.encoders import AudioEncoder, create_encoder
from audiocap.errors import ConfigError
from audiocap.optim import param_groups
from audiocap.tokenizer import Tokenizer


class CachedFrames:
    """A frozen encoder's frames, computed before training (`val_frames`: of the validation clips)."""

    def __init__(self, encoder: AudioEncoder, val_frames: list[np.ndarray]):
        self.encoder, self.module, self.val_frames = encoder, encoder, val_frames

    def __call__(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return frames, frame_lengths

    def train(self) -> None:
        pass  # a frozen AudioEncoder stays in eval mode

    def validation_frames(self, items) -> list[np.ndarray]:
        return self.val_frames

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return []

    def state_dict(self) -> None:
        return None  # a frozen encoder is rebuilt from its checkpoint: no copy in every training checkpoint

    def load_state_dict(self, state: None) -> None:
        pass


class FineTunedEncoder:
    """Waveforms through the encoder, which trains too (nothing to cache: it changes every step).

    `batchnorm` (TrainConfig.encoder_batchnorm, see `encoder_batchnorm_mode`): "sync" converts the batch norms
    to SyncBatchNorm (same parameter and buffer names: checkpoints and model files are unchanged), "frozen"
    keeps the pretrained running statistics."""

    def __init__(self, encoder: AudioEncoder, batchnorm: str, ddp: Distributed, autocast):
        encoder = unfreeze_for_finetuning(encoder.to(ddp.device))
        if batchnorm == "sync":
            encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
        self.encoder, self.batchnorm, self.autocast = encoder, batchnorm, autocast
        self.module = DistributedDataParallel(encoder) if ddp.enabled else encoder

    def __call__(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast:
            return self.module(waveforms, lengths)

    def train(self) -> None:
        self.encoder.train()
        if self.batchnorm == "frozen":
            freeze_batchnorm_statistics(self.encoder)

    def validation_frames(self, items) -> list[np.ndarray]:
        """This epoch's encoder on whole clips: as the model file will caption them."""
        return [self.encoder.encode_file(item.audio_path) for item in items]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return param_groups(self.encoder, lr, weight_decay)

    def state_dict(self) -> dict:
        return self.encoder.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state)


def build_encoder(config) -> AudioEncoder:
    """The configured audio encoder; `encoder_options` it does not accept are a ConfigError naming them."""
    try:
        return create_encoder(config.encoder, checkpoint=config.encoder_checkpoint, **config.encoder_options)
    except (TypeError, ValueError) as err:
        if not config.encoder_options:
            raise
        raise ConfigError(f"config key encoder_options={config.encoder_options!r} does not fit encoder "
                          f"{config.encoder!r} ({err}); remove or correct it (every encoder takes `pretrained`; "
                          "other options depend on the encoder)") from None


def estimated_frames(paths: list[Path], frame_rate: float, crop_seconds: list[float | None]) -> list[int]:
    """Encoder frames of each file (cropped to `crop_seconds` where given), from its header: no decoding."""
    return [math.floor(min(audio_duration(path), crop or math.inf) * frame_rate)
            for path, crop in zip(paths, crop_seconds)]


class WaveformPairs(torch.utils.data.Dataset):
    """(audio path, caption ids) pairs served as (waveform (N,) float32 at `sample_rate`, ids).

    The audio is read when a batch needs it: a dataset's waveforms do not fit in memory. With
    `crop_seconds`, each clip is cut to a random window of that length (a new one every time),
    which bounds the memory of the encoder's activations. The start is drawn from torch's global
    generator in the main process (the DataLoader has no workers), so `--resume` restores it."""

    def __init__(self, pairs: list[tuple[Path, list[int]]], sample_rate: int, crop_seconds: float | None = None):
        self.pairs, self.sample_rate = pairs, sample_rate
        self.crop_samples = None if crop_seconds is None else max(1, round(crop_seconds * sample_rate))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, list[int]]:
        path, ids = self.pairs[index]
        waveform = load_audio(path, self.sample_rate)
        if self.crop_samples is not None and len(waveform) > self.crop_samples:
            start = int(torch.randint(0, len(waveform) - self.crop_samples + 1, ()))
            waveform = waveform[start:start + self.crop_samples]
        return waveform, ids


def unfreeze_for_finetuning(encoder):
    """Make trainable the encoder parameters that its frames depend on, and only those.

    The others (PANNs' AudioSet tagging head) stay frozen: DDP expects a gradient for every
    trainable parameter at every step, and `find_unused_parameters=True` would cost an extra
    graph traversal per step. They are found by one backward pass from a second of silence, in
    eval mode so that no batch-norm statistic changes and no random number is drawn."""
    encoder.unfreeze().eval()
    device = encoder.device
    n = encoder.sample_rate
    frames, _ = encoder(torch.zeros(1, n, device=device), torch.tensor([n], device=device))
    frames.sum().backward()
    for p in encoder.parameters():
        p.requires_grad_(p.grad is not None)
        p.grad = None
    return encoder


def encoder_batchnorm_mode(setting: str, ddp) -> str:
    """The fine-tuned encoder's batch-norm mode for TrainConfig.encoder_batchnorm on this run's devices."""
    if setting == "auto":
        setting = "sync" if ddp.enabled and ddp.device.type == "cuda" else "batch"
    if setting == "sync" and ddp.device.type != "cuda":
        raise ConfigError("encoder_batchnorm=sync: PyTorch's SyncBatchNorm runs on CUDA only; on this device use "
                          "encoder_batchnorm=frozen (exact under DDP) or batch")
    if setting == "batch" and ddp.enabled and ddp.is_main:
        print("note: each process normalises its own batch in the encoder's batch norm (encoder_batchnorm=batch); "
              "encoder_batchnorm=frozen makes N processes equal one process with their combined batch", flush=True)
    return setting


def freeze_batchnorm_statistics(module: torch.nn.Module) -> None:
    """Put the batch-norm layers in eval mode: they normalise with their running statistics and stop
    updating them; their scale and shift still train."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()


def collate(batch):
    """[(frames (T_i,D) array, ids list)] -> frames (B,T,D), frame_lengths (B,), tokens_in/out (B,L)."""
    frames = [torch.tensor(f, dtype=torch.float32) for f, _ in batch]  # copies the memory-mapped cache
    frame_lengths = torch.tensor([f.shape[0] for f in frames])
    padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)
    L = max(len(ids) for _, ids in batch) + 1
    tokens_in = torch.full((len(batch), L), Tokenizer.pad)
    tokens_out = torch.full((len(batch), L), Tokenizer.pad)
    for i, (_, ids) in enumerate(batch):
        tokens_in[i, : len(ids) + 1] = torch.tensor([Tokenizer.bos, *ids])
        tokens_out[i, : len(ids) + 1] = torch.tensor([*ids, Tokenizer.eos])
    return padded, frame_lengths, tokens_in, tokens_out


def batch_groups(batches, size: int):
    """Consecutive lists of `size` batches, the last maybe shorter: the batches of one optimizer step."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
