"""The one interface every audio encoder implements (the registry by name is `audiocap.encoders`).

An encoder maps a batch of mono waveforms at its own `sample_rate` to a sequence of frame
embeddings:

    frames, frame_lengths = encoder(waveforms, lengths)
    # waveforms: (B, N) float32, zero-padded; lengths: (B,) int64 valid samples
    # frames: (B, T, encoder.dim); frame_lengths: (B,) int64 valid frames (T = max)

`frame_rate` is frames per second of audio, so `frame_lengths ≈ lengths / sample_rate * frame_rate`.

Rebuilding an encoder without its original checkpoint (e.g. from a model file that stores the
encoder's weights): keep `encoder.config()` and `encoder.state_dict()`, then

    encoder = audiocap.encoders.encoder_from_config(config, state_dict)
    # = create_encoder(config["name"], pretrained=False, **config["options"]) + strict load_state_dict
"""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from audiocap.audio import display_path, stream_audio
from audiocap.errors import AudioLoadError


class AudioEncoder(nn.Module):
    """Base class: subclasses set the attributes and implement `forward`."""

    name: str = "abstract"
    sample_rate: int = 32000
    frame_rate: float = 1.0
    dim: int = 0
    options: dict = {}  # the constructor's keyword arguments (JSON types): rebuild with `encoder_from_config`

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
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "dim": self.dim, "options": dict(self.options)}

    @property
    def hop_samples(self) -> int:
        """Input samples per output frame."""
        return round(self.sample_rate / self.frame_rate)

    @property
    def device(self) -> torch.device:
        """Where the weights are: of the first parameter or buffer (CPU if there are none)."""
        return next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device

    def chunk_samples(self, chunk_seconds: float) -> int:
        """Samples in a chunk of about `chunk_seconds`, rounded down to whole frames so that the outputs
        of consecutive chunks tile the frame grid."""
        return max(1, int(chunk_seconds * self.sample_rate) // self.hop_samples) * self.hop_samples

    @torch.no_grad()
    def encode_chunks(self, chunks: Iterable[np.ndarray]) -> np.ndarray:
        """Frames (T, dim) float32 of one recording given as consecutive mono chunks (each `chunk_samples`
        long but the last), one forward pass per chunk: memory is bounded by one chunk, not the recording.
        Frames within a receptive field of a chunk boundary see zero padding instead of the neighbouring
        chunk."""
        device = self.device
        pieces = []
        for chunk in chunks:
            waveform = torch.as_tensor(chunk, dtype=torch.float32).to(device)[None]  # (1, n)
            frames, frame_lengths = self(waveform, torch.tensor([waveform.shape[1]], device=device))
            pieces.append(frames[0, : frame_lengths[0]].float().cpu().numpy())
        if not pieces:  # no audio: one frame of silence, like any too-short clip
            frames, _ = self(torch.zeros(1, 0, device=device), torch.zeros(1, dtype=torch.long, device=device))
            pieces.append(frames[0, :1].float().cpu().numpy())
        return np.concatenate(pieces)

    @torch.no_grad()
    def encode_clips(self, waveforms: Sequence, chunk_seconds: float = 60.0) -> list[torch.Tensor]:
        """Frames (T_i, dim) float32 of each mono waveform (N_i,), on this encoder's device, each exactly as
        `encode_file` gives them for the clip alone: on a GPU clips of one length share a forward pass, and a
        clip longer than `chunk_seconds` is encoded in chunks (`encode_chunks`).

        Why not one zero-padded batch: the front end and the convolutions see the padding, which changes a
        shorter clip's last frames (2 of Cnn10's; for a 4 s clip next to a 12 s one, all 3 of aisfx's), so a
        clip's frames — and its caption — would depend on the other clips of its batch and differ from the
        frames training cached."""
        device, chunk = self.device, self.chunk_samples(chunk_seconds)
        # On a CPU one clip per forward pass beats a batch (a batch's activations overflow the caches; Cnn10:
        # 1.3x less time per clip, docs/BENCHMARKS.md, "Audio front end and encoders"); a GPU wants the batch.
        per_pass = len(waveforms) if device.type == "cuda" else 1
        frames: list[torch.Tensor | None] = [None] * len(waveforms)
        by_length: dict[int, list[int]] = {}
        for i, waveform in enumerate(waveforms):
            by_length.setdefault(len(waveform), []).append(i)
        for n, indices in by_length.items():
            if n > chunk:
                for i in indices:
                    pieces = (waveforms[i][start:start + chunk] for start in range(0, n, chunk))
                    frames[i] = torch.from_numpy(self.encode_chunks(pieces)).to(device)
                continue
            for group in (indices[start:start + per_pass] for start in range(0, len(indices), per_pass)):
                batch = torch.stack([torch.as_tensor(waveforms[i], dtype=torch.float32) for i in group]).to(device)
                output, lengths = self(batch, torch.full((len(group),), n, device=device))  # (k, T, dim), (k,)
                for j, i in enumerate(group):
                    frames[i] = output[j, : lengths[j]].float()
        return frames

    def encode_file(self, path: str | Path, chunk_seconds: float = 60.0, allow_empty: bool = True) -> np.ndarray:
        """Frames (T, dim) float32 of one audio file of any length, T ≈ duration · frame_rate.

        The file is decoded, resampled and encoded in chunks of `chunk_seconds` (`encode_chunks`), so
        memory is bounded by one chunk: the chunk's waveform (4 bytes/sample) plus one forward pass over
        it (for 60 s: ~0.4 GB for panns-cnn14, ~0.2 GB for panns-cnn10), plus the output itself
        (T · dim · 4 bytes; one hour of panns-cnn14 is 92 MB).
        Clips shorter than `chunk_seconds` are one forward pass, identical to `forward`. A file with no samples
        gives one frame of silence, or AudioLoadError if not `allow_empty` (tags or a caption of it would be
        made up).
        """
        chunks = stream_audio(path, self.sample_rate, self.chunk_samples(chunk_seconds))
        return self.encode_chunks(chunks if allow_empty else _require_audio(chunks, path))

    def weights_hash(self) -> str:
        """Content hash of the parameters and buffers (identifies the weights in feature caches)."""
        h = hashlib.sha1()
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _require_audio(chunks: Iterable[np.ndarray], path) -> Iterable[np.ndarray]:
    empty = True
    for chunk in chunks:
        empty = False
        yield chunk
    if empty:
        raise AudioLoadError(f"{display_path(path)}: no audio samples")
