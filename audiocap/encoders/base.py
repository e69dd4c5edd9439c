"""The one interface every audio encoder implements, and the registry of encoders by name.

An encoder maps a batch of mono waveforms at its own `sample_rate` to a sequence of frame
embeddings:

    frames, frame_lengths = encoder(waveforms, lengths)
    # waveforms: (B, N) float32, zero-padded; lengths: (B,) int64 valid samples
    # frames: (B, T, encoder.dim); frame_lengths: (B,) int64 valid frames (T = max)

`frame_rate` is frames per second of audio, so `frame_lengths ≈ lengths / sample_rate * frame_rate`.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch
from torch import nn


class AudioEncoder(nn.Module):
    """Base class: subclasses set the attributes and implement `forward`."""

    name: str = "abstract"
    sample_rate: int = 32000
    frame_rate: float = 1.0
    dim: int = 0

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for `lengths` valid samples (at least one frame per clip)."""
        frames = torch.div(lengths.float() * self.frame_rate, self.sample_rate, rounding_mode="floor")
        return frames.long().clamp(min=1)

    def freeze(self) -> "AudioEncoder":
        """Stop gradients and fix batch-norm statistics (eval mode stays on under .train())."""
        self.requires_grad_(False)
        self._frozen = True
        return self.train(False)

    def unfreeze(self) -> "AudioEncoder":
        self.requires_grad_(True)
        self._frozen = False
        return self

    @property
    def frozen(self) -> bool:
        return getattr(self, "_frozen", False)

    def train(self, mode: bool = True) -> "AudioEncoder":
        return super().train(mode and not self.frozen)

    def config(self) -> dict:
        """Settings that change the output (front end included): part of cache keys and model files."""
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "dim": self.dim}

    def weights_hash(self) -> str:
        """Content hash of the parameters and buffers (identifies the weights in feature caches)."""
        h = hashlib.sha1()
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# name -> (factory(checkpoint: str | None, **kwargs) -> AudioEncoder, one-line description)
_REGISTRY: dict[str, tuple[Callable[..., AudioEncoder], str]] = {}


def register_encoder(name: str, description: str):
    def wrap(factory: Callable[..., AudioEncoder]):
        _REGISTRY[name] = (factory, description)
        return factory

    return wrap


def _load_builtin_encoders() -> None:
    import audiocap.encoders.panns  # noqa: F401  (registers panns-cnn10/14, scratch-cnn10)
    import audiocap.encoders.aisfx  # noqa: F401  (registers aisfx)


def list_encoders() -> dict[str, str]:
    _load_builtin_encoders()
    return {name: desc for name, (_, desc) in _REGISTRY.items()}


def create_encoder(name: str, checkpoint: str | None = None, **kwargs) -> AudioEncoder:
    """Build an encoder by registry name; `checkpoint` is a weights file where the encoder needs one."""
    _load_builtin_encoders()
    if name not in _REGISTRY:
        from audiocap.errors import ConfigError

        raise ConfigError(f"unknown encoder {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name][0](checkpoint=checkpoint, **kwargs)
