"""The log-mel front end: a handful of pure functions in the style of `librosa`, written with torch so
that the encoders can run them on batches:

    log_mel = log_mel_spectrogram(waveform)                   # (T, 64) dB, T = 1 + N // 320

The default settings are those of PANNs (Kong et al., 2020), whose checkpoints expect them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MelSettings:
    """Everything that defines a mel spectrogram; the defaults are PANNs'."""

    sample_rate: int = 32000
    n_fft: int = 1024  # window length = FFT size
    hop_length: int = 320  # 10 ms at 32 kHz
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    mel_scale: str = "slaney"  # "slaney" (Auditory Toolbox, librosa's default) or "htk"
    mel_norm: str = "slaney"  # "slaney": triangles of equal area per Hz; "unit_sum": rows sum to 1
    periodic_window: bool = True  # periodic Hann (librosa, torch) or symmetric (essentia)
    pad_mode: str = "reflect"  # centred frames: the signal is padded by n_fft // 2 on each side


PANNS_MEL = MelSettings()



# Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above
_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0  # where the logarithmic part starts
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # log(Hz) per mel in the logarithmic part


def hz_to_mel(hz: np.ndarray, scale: str = "slaney") -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    log_part = np.log(np.maximum(hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, _SLANEY_MIN_LOG_MEL + log_part, hz / _SLANEY_F_SP)


def mel_to_hz(mel: np.ndarray, scale: str = "slaney") -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    return np.where(mel >= _SLANEY_MIN_LOG_MEL,
                    _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_MIN_LOG_MEL)),
                    _SLANEY_F_SP * mel)


def mel_filters(settings: MelSettings = PANNS_MEL) -> np.ndarray:
    """Triangular mel filter bank (n_fft // 2 + 1, n_mels), float64, as `librosa.filters.mel(...).T`.

    The layout (frequency bins first) is that of torchlibrosa's `melW`, so `power @ filters`.
    """
    fft_hz = np.linspace(0.0, settings.sample_rate / 2, settings.n_fft // 2 + 1)
    edges_mel = np.linspace(hz_to_mel(settings.f_min, settings.mel_scale),
                            hz_to_mel(settings.f_max, settings.mel_scale), settings.n_mels + 2)
    edges_hz = mel_to_hz(edges_mel, settings.mel_scale)  # (n_mels + 2,) left, centre, right of each band
    widths = np.diff(edges_hz)  # (n_mels + 1,)
    distance = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freq)
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_freq)
    if settings.mel_norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    elif settings.mel_norm == "unit_sum":
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    else:
        raise ValueError(f"unknown mel_norm {settings.mel_norm!r}")
    return weights.T


def power_spectrogram(waveform: torch.Tensor, settings: MelSettings = PANNS_MEL) -> torch.Tensor:
    """|STFT|² of centred Hann-windowed frames: (..., N) -> (..., T, n_fft // 2 + 1), T = 1 + N // hop.

    Signals shorter than half a window are zero-padded to that length first, because reflect
    padding needs at least n_fft // 2 + 1 samples (so empty audio gives one frame of silence).
    """
    minimum = settings.n_fft // 2 + 1
    if waveform.shape[-1] < minimum:
        waveform = torch.nn.functional.pad(waveform, (0, minimum - waveform.shape[-1]))
    batch_shape = waveform.shape[:-1]
    window = torch.hann_window(settings.n_fft, periodic=settings.periodic_window,
                               dtype=waveform.dtype, device=waveform.device)
    stft = torch.stft(waveform.reshape(-1, waveform.shape[-1]), settings.n_fft, settings.hop_length,
                      window=window, center=True, pad_mode=settings.pad_mode, return_complex=True)
    power = stft.real.square() + stft.imag.square()  # (B, n_freq, T)
    return power.transpose(-1, -2).reshape(*batch_shape, power.shape[-1], power.shape[-2])


def log_mel_spectrogram(waveform: np.ndarray | torch.Tensor, settings: MelSettings = PANNS_MEL,
                        filters: torch.Tensor | None = None, amin: float = 1e-10) -> torch.Tensor:
    """10·log10(max(mel power, amin)) in dB: (..., N) -> (..., T, n_mels), T = 1 + N // hop.

    Equals `librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0, amin=1e-10,
    top_db=None).T` with the same settings. Computed in the waveform's dtype (pass float64 for a
    reference-grade result); `filters` (n_freq, n_mels) defaults to `mel_filters(settings)`.
    """
    waveform = torch.as_tensor(waveform)
    if filters is None:
        filters = torch.from_numpy(mel_filters(settings))
    mel = power_spectrogram(waveform, settings) @ filters.to(waveform.dtype)  # (..., T, n_mels)
    return 10.0 * torch.log10(mel.clamp(min=amin))
