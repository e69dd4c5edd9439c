"""Audio of the default model's training clips: source files as clips, and two-part mixtures.

Every clip is written as 16-bit FLAC, mono, 44.1 kHz (the aiSFX encoder's rate). Mixtures are
loudness-matched before the relative gain, scaled down to a -1 dBFS peak, never clipped.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from audiocap.audio import load_audio

SAMPLE_RATE = 44100
TARGET_RMS = 0.1  # -20 dBFS: both parts get the same loudness before the relative gain
PEAK_LIMIT = 0.89  # -1 dBFS
PART_GAP_S = 0.15  # silence between the files of a multi-file clip (spoken digits)
MIXTURE_SECONDS = 10.0


@dataclass
class Mixture:
    file_name: str
    kind: str  # "overlay" | "sequence" | "background"
    first: str  # overlay/background: the part the gain is relative to (background: the foreground); sequence: heard first
    second: str
    gain_db: float = 0.0  # applied to `second` after both are loudness-matched
    gap_s: float = 0.0  # sequence: silence between the parts (after trimming)
    lead_s: float = 0.0  # sequence: silence before the first part
    captions: list[str] = field(default_factory=list)


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write atomically, and not at all if the file already holds these bytes: a rebuild keeps
    unchanged clips' times, so their cached features stay valid."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    data = buffer.getvalue()
    if path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def render_source(files: list[Path], max_seconds: float) -> np.ndarray:
    """The files one after another (PART_GAP_S apart), mono at SAMPLE_RATE, cut to `max_seconds`.
    Quiet sources stay quiet; only a peak above -1 dBFS is scaled down."""
    gap = np.zeros(int(PART_GAP_S * SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for i, path in enumerate(files):
        pieces += ([gap] if i else []) + [load_audio(path, SAMPLE_RATE)]
    return limit_peak(np.concatenate(pieces)[: int(max_seconds * SAMPLE_RATE)])


def read_clip(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    return audio.mean(axis=1)


def frame_rms(audio: np.ndarray, frame: int = 1024) -> np.ndarray:
    usable = max(frame, len(audio) // frame * frame)
    padded = np.pad(audio, (0, max(0, usable - len(audio))))[:usable]
    return np.sqrt(np.mean(padded.reshape(-1, frame) ** 2, axis=1) + 1e-12)


def active_frames(audio: np.ndarray, frame: int = 1024, below_peak_db: float = 40.0) -> np.ndarray:
    """Frames within `below_peak_db` of the loudest one. Many clips are a short event padded
    with digital silence; loudness and trimming should look at the event only."""
    rms = frame_rms(audio, frame)
    return rms >= rms.max() * 10 ** (-below_peak_db / 20)


def match_loudness(audio: np.ndarray) -> np.ndarray:
    rms = frame_rms(audio)[active_frames(audio)]
    return audio * (TARGET_RMS / np.sqrt(np.mean(rms**2)))


def trim_silence(audio: np.ndarray, frame: int = 1024, margin_s: float = 0.05) -> np.ndarray:
    active = np.flatnonzero(active_frames(audio, frame))
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, active[0] * frame - margin)
    end = min(len(audio), (active[-1] + 1) * frame + margin)
    return audio[start:end]


def limit_peak(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    return (audio * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else audio).astype(np.float32)


def fit_length(audio: np.ndarray, n: int, tile: bool = False) -> np.ndarray:
    """Cut or pad to n samples; `tile` repeats a short background instead of padding with silence."""
    if tile and len(audio) < n:
        audio = np.tile(audio, -(-n // len(audio)))
    return np.pad(audio[:n], (0, max(0, n - len(audio))))


def render_overlay(first: np.ndarray, second: np.ndarray, gain_db: float) -> np.ndarray:
    """Both parts at once, as long as the longer one (at most MIXTURE_SECONDS)."""
    n = min(max(len(first), len(second)), int(MIXTURE_SECONDS * SAMPLE_RATE))
    a, b = match_loudness(fit_length(first, n)), match_loudness(fit_length(second, n))
    return limit_peak(a + b * 10 ** (gain_db / 20))


def render_background(foreground: np.ndarray, background: np.ndarray, gain_db: float) -> np.ndarray:
    """A foreground (speech) over a background repeated to the foreground's whole length, so the
    background is heard throughout."""
    n = min(len(foreground), int(MIXTURE_SECONDS * SAMPLE_RATE))
    a = match_loudness(fit_length(foreground, n))
    b = match_loudness(fit_length(background, n, tile=True))
    return limit_peak(a + b * 10 ** (gain_db / 20))


def render_sequence(first: np.ndarray, second: np.ndarray, gain_db: float, gap_s: float,
                    lead_fraction: float) -> tuple[np.ndarray, float, float]:
    """First part, gap, second part inside MIXTURE_SECONDS; each part trimmed of surrounding
    silence and cut to at most half the clip. The gap shrinks if needed, and `lead_fraction` of
    the remaining slack (at most 0.5 s) goes before the first part. Returns the audio and the
    actual gap and lead in seconds."""
    half = int(MIXTURE_SECONDS * SAMPLE_RATE) // 2
    a = trim_silence(match_loudness(first))[:half]
    b = (trim_silence(match_loudness(second)) * 10 ** (gain_db / 20))[:half]
    total = int(MIXTURE_SECONDS * SAMPLE_RATE)
    slack = total - len(a) - len(b)
    gap = min(int(gap_s * SAMPLE_RATE), slack)
    lead = int(lead_fraction * min(slack - gap, SAMPLE_RATE // 2))
    end = lead + len(a) + gap + len(b)
    out = np.zeros(end, dtype=np.float32)
    out[lead: lead + len(a)] = a
    out[lead + len(a) + gap: end] = b
    return limit_peak(out), gap / SAMPLE_RATE, lead / SAMPLE_RATE


def render_babble(voices: list[np.ndarray], gains_db: list[float], offsets: list[float], seconds: float) -> np.ndarray:
    """Several voices talking at once for `seconds`, as in a crowded room: each voice trimmed of
    silence, loudness-matched, started `offset` (a fraction) into itself and repeated so that it
    never stops early, at its own gain (near and far talkers)."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n, dtype=np.float32)
    gap = np.zeros(int(PART_GAP_S * SAMPLE_RATE), dtype=np.float32)
    for voice, gain_db, offset in zip(voices, gains_db, offsets):
        talk = np.concatenate([trim_silence(match_loudness(voice)), gap])
        talk = np.roll(talk, -int(offset * len(talk)))
        out += fit_length(talk, n, tile=True) * 10 ** (gain_db / 20)
    return limit_peak(match_loudness(out))


def render_scene(bed: np.ndarray, event: np.ndarray, gain_db: float, start_fraction: float,
                 seconds: float) -> tuple[np.ndarray, float]:
    """An event heard once over an ambience (`bed`, repeated to fill `seconds`), as in a field
    recording. The event is trimmed of silence and cut to half the scene; `gain_db` is its level
    relative to the loudness-matched bed. Returns the audio and where the event starts (s)."""
    n = int(seconds * SAMPLE_RATE)
    out = match_loudness(fit_length(bed, n, tile=True)).astype(np.float32)
    sound = trim_silence(match_loudness(event))[: n // 2] * 10 ** (gain_db / 20)
    start = int(start_fraction * (n - len(sound)))
    out[start: start + len(sound)] += sound
    return limit_peak(out), start / SAMPLE_RATE
