"""Helpers for `train.py` that would only distract from the loop: waveform examples
and the encoder's trainable parameters (fine-tuning), augmentation, optimizer groups and the
learning-rate schedule, checkpoint I/O, random-number states and distributed setup."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from audiocap.errors import CheckpointError, ConfigError

# ---------------------------------------------------------------------------------------------
# checks of the data and the encoder against the config, before the first training step


def build_encoder(config, create_encoder):
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
    from audiocap.audio import audio_duration

    return [math.floor(min(audio_duration(path), crop or math.inf) * frame_rate)
            for path, crop in zip(paths, crop_seconds)]


def check_clip_frames(paths: list[Path], n_frames: list[int], max_frames: int, fix: str = "") -> None:
    """DataError naming the clips whose encoder frames exceed the model's positional table, so that
    training fails before its first step rather than at the first batch (or validation) holding one."""
    from audiocap.errors import DataError, first_few

    lengths = dict(zip(map(str, paths), n_frames))  # a clip in both training and validation counts once
    too_long = sorted(((n, path) for path, n in lengths.items() if n > max_frames), reverse=True)
    if too_long:
        listed = first_few((f"{path} ({n} frames)" for n, path in too_long), 3)
        raise DataError(f"{len(too_long)} clip(s) longer than the model covers (model.max_audio_frames={max_frames}):"
                        f" {listed}; set model.max_audio_frames={too_long[0][0]} or more, {fix}"
                        "or cut the clips shorter")


# ---------------------------------------------------------------------------------------------
# fine-tuning the audio encoder: examples are waveforms, the encoder runs in the forward pass


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
        from audiocap.audio import load_audio

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


def param_groups(module: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups for `module`'s trainable parameters: weight decay on matrices and kernels, none
    on biases and norms (their 1-d parameters)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------
# augmentation of encoder frames (cached, or computed in the forward pass when fine-tuning)


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


# ---------------------------------------------------------------------------------------------
# learning rate: linear warm-up, then cosine or linear decay to `min_ratio` × peak


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


def gradient_sync(sync: bool, *modules) -> contextlib.ExitStack:
    """A context in which the DDP modules among `modules` all-reduce gradients in backward only if `sync`:
    accumulating k batches, the k-1 first skip it and the last reduces the sum of all k."""
    stack = contextlib.ExitStack()
    if not sync:
        for module in modules:
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                stack.enter_context(module.no_sync())
    return stack


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str, min_ratio: float) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    elif decay == "linear":
        shape = 1 - progress
    else:  # "none"
        shape = 1.0
    return min_ratio + (1 - min_ratio) * shape


# ---------------------------------------------------------------------------------------------
# checkpoints: written atomically, read with weights_only=True (no arbitrary code on load)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file then rename: a crash mid-write never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint `save_checkpoint` wrote: tensors and plain values only (weights_only=True), so a file
    holding anything else is refused rather than unpickled."""
    from audiocap.encoders.checkpoint import load_checkpoint as load_tensors_only

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


# ---------------------------------------------------------------------------------------------
# distributed data parallel: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order (every rank receives the list)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device: str) -> Distributed:
    """One process per device under torchrun (gloo on CPU, nccl on GPU); a plain run otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():  # also: PyTorch built without CUDA
            raise ConfigError(f"config key device=cuda: PyTorch sees {torch.cuda.device_count()} CUDA device(s), this "
                              f"process needs cuda:{local_rank}; use device=cpu or device=auto")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(rank, world_size, torch.device(device))
