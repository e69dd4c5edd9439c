"""Audio input: files and arrays to mono float waveforms (the log-mel front end is in mel.py).

Decoding is left to libsndfile (through soundfile: wav, flac, ogg, mp3, ...), and to FFmpeg through
PyAV, when installed, for what libsndfile does not read (m4a/AAC, mp4, webm, ...); resampling to soxr.

    waveform = load_audio("clip.wav", sample_rate=32000)     # (N,) float32 mono
"""
from __future__ import annotations

import errno
import math
import os
import stat
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr
import torch

from audiocap.errors import AudioLoadError

# Containers and codecs libsndfile does not read, decoded by FFmpeg through PyAV (`pip install av`).
FFMPEG_EXTENSIONS = (".m4a", ".mp4", ".aac", ".webm", ".mka", ".mkv", ".mov", ".wma")
# What folders are searched for: libsndfile's formats, then FFmpeg's (a file of these without PyAV is
# reported with the fix, not silently left out).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif") + FFMPEG_EXTENSIONS
# Headers outside these are damaged or hostile (an 88 KB file claiming 1 Hz resampled to 8 GB): refused before decoding.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, MAX_CHANNELS = 1_000, 768_000, 256
# Samples are floats around [-1, 1]; beyond this they are not scaled audio, and 1e17 overflows the spectrogram.
MAX_AMPLITUDE = 100.0
READ_FRAMES = 1 << 16  # frames decoded at a time: memory never grows with a file's length while decoding
# `load_audio` holds a whole waveform: at most this many output samples (1 GB float32 would be 2 ** 28), and it
# resamples in one piece (bit-identical to soxr.resample of the whole signal) only files of up to 2 ** 25 frames.
MAX_LOAD_SAMPLES = 1 << 27
WHOLE_SIGNAL_FRAMES = 1 << 25


# ---------------------------------------------------------------------------------------------
# Reading files


def find_audio_files(inputs: list[str]) -> tuple[list[Path], int]:
    """Files given directly (audio or not: loading tells) and audio files found under folders, as given
    (a relative input keeps its folders). Returns the files and the number of inputs that failed: missing,
    unreadable folders, broken or looping symbolic links (each reported on stderr as an `error:` line)."""
    files, failed = [], 0

    def report(path, why: str) -> None:
        nonlocal failed
        print(f"error: {display_path(path)}: {why}", file=sys.stderr)
        failed += 1

    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found, count = _audio_files_under(path, report)
            if not found and not count:
                report(path, f"folder contains no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            report(path, _missing_reason(path))
    return files, failed


def _audio_files_under(folder: Path, report) -> tuple[list[Path], int]:
    """Audio files under `folder` (symbolic links to folders are not followed: no loops); folders that cannot
    be listed and links to audio that lead nowhere are reported. Returns the files and the problems' count."""
    found, problems = [], 0

    def unreadable(err: OSError) -> None:
        nonlocal problems
        problems += 1
        report(err.filename, f"cannot list this folder ({err.strerror}); fix its permissions")

    for root, _, names in os.walk(folder, onerror=unreadable):
        for name in sorted(names):
            path = Path(root, name)
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            if path.is_file():
                found.append(path)
            else:  # a symbolic link that is broken or loops: say so rather than skip it silently
                problems += 1
                report(path, _missing_reason(path))
    return sorted(found), problems


def _missing_reason(path: Path) -> str:
    """Why `path` is not a file: no such file, a broken or looping symbolic link, or a failing stat."""
    try:
        os.stat(path)
    except OSError as err:
        if path.is_symlink() and err.errno == errno.ENOENT:
            return f"broken symbolic link (to {display_path(os.readlink(path))}, which does not exist)"
        if err.errno == errno.ENOENT:
            return "no such file or folder"
        return f"cannot open it ({err.strerror})"
    return "not a regular file or folder"


def display_path(path) -> str:
    """The path as printable text: bytes a file name holds that are not UTF-8 (kept by Python as lone
    surrogates, which no UTF-8 stream can write) are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _open(path: str | Path):
    """The file as an open soundfile.SoundFile, or as an FFmpegReader (the same `samplerate`, `channels`,
    `frames`, `read`) for what libsndfile cannot read; its header checked (`_check_header`)."""
    file, name = Path(path), display_path(path)
    try:  # every OS error (permissions, a looping or broken link, a file gone) becomes this file's own error
        info = os.stat(path)
        with open(os.fsencode(path), "rb"):
            pass
    except IsADirectoryError:
        raise AudioLoadError(f"{name}: is a folder, not an audio file; give the audio files in it") from None
    except OSError as err:
        reason = "no such file" if err.errno == errno.ENOENT and not file.is_symlink() else \
            _missing_reason(file) if err.errno in (errno.ENOENT, errno.ELOOP) else f"cannot open it ({err.strerror})"
        raise AudioLoadError(f"{name}: {reason}") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioLoadError(f"{name}: is a folder, not an audio file; give the audio files in it")
    if info.st_size == 0:  # libsndfile would say "File does not exist or is not a regular file"
        raise AudioLoadError(f"{name}: file is empty (0 bytes); re-copy or re-export it")
    try:  # as bytes: soundfile would encode a str name strictly, failing on names that are not UTF-8
        return _check_header(sf.SoundFile(os.fsencode(path)), name)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        # libsndfile's own message says why (unknown format, truncated header, ...); without the name it repeats
        why = getattr(err, "error_string", err)
    try:
        reader = FFmpegReader(path)
    except ImportError:
        if file.suffix.lower() in FFMPEG_EXTENSIONS:
            raise AudioLoadError(f"{name}: {file.suffix} files are decoded by FFmpeg: install "
                                 "PyAV (`pip install av`), or convert the file to wav/flac") from None
        reader = None
    except OSError as err:
        raise AudioLoadError(f"{name}: cannot read it ({err.strerror})") from None
    except AudioLoadError:  # FFmpeg could not either: libsndfile's reason is the one to show
        reader = None
    if reader is None:
        raise AudioLoadError(f"{name}: cannot decode audio ({why}); convert it to wav/flac/ogg/mp3") from None
    return _check_header(reader, name)


def _check_header(f, name: str):
    """`f` if its header describes real audio, else AudioLoadError (closing it): such a sample rate or channel
    count would only make resampling or mixing allocate gigabytes before anything else is checked."""
    problem = None
    if not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE:
        problem = f"a sample rate of {f.samplerate} Hz (audio is {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)"
    elif not 1 <= f.channels <= MAX_CHANNELS:
        problem = f"{f.channels} channels (at most {MAX_CHANNELS})"
    if problem:
        f.__exit__(None, None, None)
        raise AudioLoadError(f"{name}: its header says {problem}; the file is damaged or not audio, re-export it")
    return f


class FFmpegReader:
    """What `load_audio`, `stream_audio` and `audio_duration` use of soundfile.SoundFile (`samplerate`,
    `frames`, `read`, a context manager), for files only FFmpeg decodes, through PyAV: the first audio
    stream, decoded frame by frame, its samples as float32 (integer PCM scaled as soundfile scales it)."""

    def __init__(self, path: str | Path):
        import av  # ImportError when PyAV is not installed: `_open` says how to get it

        self.name = display_path(path)  # for errors: named once, not per decoded frame
        self._file = open(os.fsencode(path), "rb")  # any file name: PyAV would encode a str strictly
        try:
            self._container = av.open(self._file)
            self._stream = self._container.streams.audio[0]
        except (av.error.FFmpegError, IndexError) as err:
            self._file.close()
            raise AudioLoadError(f"{self.name}: no audio stream FFmpeg can decode ({err})") from None
        self.samplerate: int = self._stream.rate
        self.channels: int = self._stream.channels
        self._frames = self._container.decode(self._stream)
        self._pending = np.zeros((0, self.channels), np.float32)

    @property
    def frames(self) -> int:
        """Samples per channel, from the container's header."""
        stream, seconds = self._stream, None
        if stream.duration is not None:
            seconds = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / 1_000_000  # av.time_base: microseconds
        return round((seconds or 0.0) * self.samplerate)

    def read(self, frames: int = -1, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """The next `frames` samples (all that remain if -1), (n, channels) float32."""
        import av

        blocks, n = [self._pending], len(self._pending)
        try:
            while frames < 0 or n < frames:
                frame = next(self._frames, None)
                if frame is None:
                    break
                samples = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
                block = samples.T if frame.format.is_planar else samples.reshape(-1, self.channels)
                blocks.append(_pcm_to_float(block, self.name).astype(np.float32, copy=False))
                n += len(block)
        except av.error.FFmpegError as err:
            raise AudioLoadError(f"{self.name}: decoding failed ({err}); the file may be truncated") from None
        out = np.concatenate(blocks) if len(blocks) > 1 else self._pending
        cut = len(out) if frames < 0 else min(frames, len(out))
        self._pending = out[cut:]
        return out[:cut]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()
        self._file.close()


class AudioTooLongError(AudioLoadError):
    """A file holds more audio than the caller accepts; `seconds` (from its header, or decoded so far)."""

    def __init__(self, name: str, seconds: float, limit: float):
        super().__init__(f"{name}: {seconds:.0f} s of audio, more than the {limit:.0f} s accepted here; "
                         "caption it in segments (`audiocap caption --segment 10`) or cut it shorter")
        self.seconds, self.limit = seconds, limit


def check_samples(mono: np.ndarray, name: str) -> np.ndarray:
    """`mono` if its samples are finite and within MAX_AMPLITUDE of full scale, else AudioLoadError: NaN turns every
    frame to NaN, and samples of 1e17 overflow the spectrogram's float32 (an empty caption, a NaN training loss)."""
    peak = float(np.abs(mono).max(initial=0.0))
    if not math.isfinite(peak):
        raise AudioLoadError(f"{name}: contains NaN or infinite samples; the file is corrupt, re-export it")
    if peak > MAX_AMPLITUDE:
        raise AudioLoadError(f"{name}: samples reach {peak:.3g}, far outside audio's [-1, 1]; normalise the file "
                             f"(peaks up to {MAX_AMPLITUDE:g} are accepted as they are)")
    return mono


def _mono_blocks(f, path: str | Path, limit: float) -> Iterator[np.ndarray]:
    """The open file's samples as checked float32 mono blocks of at most READ_FRAMES; AudioTooLongError once more
    than `limit` frames are decoded (a header may understate the length)."""
    name, total = display_path(path), 0
    while True:
        try:
            block = f.read(READ_FRAMES, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            raise AudioLoadError(f"{name}: decoding failed ({err}); the file may be truncated") from None
        if len(block) == 0:
            return
        total += len(block)
        if total > limit:
            raise AudioTooLongError(name, total / f.samplerate, limit / f.samplerate)
        with np.errstate(over="ignore"):  # a mean beyond float32's range is inf, refused by check_samples
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        yield check_samples(np.ascontiguousarray(mono, dtype=np.float32), name)
        if len(block) < READ_FRAMES:
            return


def _resampled_blocks(f, path, sample_rate: int, limit: float) -> Iterator[np.ndarray]:
    """`_mono_blocks` resampled to `sample_rate` as a stream (soxr keeps a little state between blocks)."""
    if f.samplerate == sample_rate:
        yield from _mono_blocks(f, path, limit)
        return
    resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    for block in _mono_blocks(f, path, limit):
        yield resampler.resample_chunk(block)
    yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def _collect(blocks: Iterator[np.ndarray], capacity: int) -> np.ndarray:
    """The blocks (at most `capacity` samples in all) as one array. The buffer is allocated at its largest size
    at once: pages never written are never committed, and no concatenation doubles the memory at the end."""
    out, n = np.empty(capacity, np.float32), 0
    for block in blocks:
        out[n:n + len(block)] = block
        n += len(block)
    return out[:n]


def _accepted_frames(f, path, max_seconds: float | None, out_rate: int) -> float:
    """Input frames `load_audio` decodes at most: `max_seconds`, and MAX_LOAD_SAMPLES of output;
    AudioTooLongError at once when the header already says the file is longer."""
    seconds = min(max_seconds or math.inf, MAX_LOAD_SAMPLES / out_rate)
    if f.frames > seconds * f.samplerate:
        raise AudioTooLongError(display_path(path), f.frames / f.samplerate, seconds)
    return seconds * f.samplerate


def audio_duration(path: str | Path) -> float:
    """Seconds of audio in a file, from its header (nothing is decoded); AudioLoadError as `load_audio`."""
    with _open(path) as f:
        return f.frames / f.samplerate


def scan_audio(path: str | Path) -> int:
    """Decode a whole file block by block, keeping nothing, and check every sample (as `load_audio` does);
    returns its number of frames. Memory does not grow with the file's length."""
    with _open(path) as f:
        return sum(len(block) for block in _mono_blocks(f, path, math.inf))


def load_audio(path: str | Path, sample_rate: int | None = None, max_seconds: float | None = None) -> np.ndarray:
    """Decode a whole file to a float32 mono waveform (N,), resampled to `sample_rate` if given.

    Any channel count and sample rate are accepted. A file longer than `max_seconds` (and than MAX_LOAD_SAMPLES
    output samples) raises AudioTooLongError, from its header before anything is decoded. Memory holds the result
    and one block: a short file is resampled as a whole, a long one (over WHOLE_SIGNAL_FRAMES) as a stream.
    Use `stream_audio` for recordings of any length.
    """
    with _open(path) as f:
        out_rate = sample_rate or f.samplerate
        limit = _accepted_frames(f, path, max_seconds, out_rate)
        if out_rate == f.samplerate:
            return _collect(_mono_blocks(f, path, limit), math.floor(limit))
        if f.frames == 0 or f.frames > WHOLE_SIGNAL_FRAMES:  # long, or of unknown length (FFmpeg)
            capacity = math.ceil(limit * out_rate / f.samplerate) + READ_FRAMES
            return _collect(_resampled_blocks(f, path, out_rate, limit), capacity)
        waveform = _collect(_mono_blocks(f, path, min(limit, WHOLE_SIGNAL_FRAMES)), WHOLE_SIGNAL_FRAMES)
        source_rate = f.samplerate
    if len(waveform) == 0:
        return waveform
    return soxr.resample(waveform, source_rate, out_rate, quality="HQ")


def stream_audio(path: str | Path, sample_rate: int, chunk_samples: int) -> Iterator[np.ndarray]:
    """Yield a file as consecutive float32 mono chunks of exactly `chunk_samples` at `sample_rate`
    (the last one shorter), decoding and resampling incrementally.

    Memory stays O(chunk_samples) whatever the file's length: one decoded block, soxr's
    internal state and the chunk being filled. Concatenated, the chunks equal `load_audio`
    up to soxr's streaming-vs-whole-signal rounding (~1e-6).
    """
    with _open(path) as f:
        pending, pending_len = [], 0
        for block in _resampled_blocks(f, path, sample_rate, math.inf):
            pending.append(block)
            pending_len += len(block)
            while pending_len >= chunk_samples:
                buffer = np.concatenate(pending)
                yield buffer[:chunk_samples]
                pending, pending_len = [buffer[chunk_samples:]], len(buffer) - chunk_samples
        if pending_len > 0:
            yield np.concatenate(pending)


def as_waveform(array, sample_rate: int, name: str = "an array") -> np.ndarray:
    """A 1-D numpy array or torch tensor as a float32 mono waveform, checked like a file's samples.

    Integer PCM is scaled to [-1, 1) as soundfile reads it: int8/16/32/64 are divided by 2 ** (bits - 1),
    uint8 (8-bit WAV) becomes (x - 128) / 128. Float arrays are taken as they are. `name` says which
    input is at fault in errors (AudioLoadError)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise AudioLoadError(f"{name}: expected a file path or a 1-D float array (mono) at {sample_rate} Hz, "
                             f"got {type(array).__name__}; pass a waveform as np.asarray(samples, np.float32)")
    if array.ndim != 1:
        raise AudioLoadError(f"{name}: expected a 1-D float array (mono) at {sample_rate} Hz, got shape "
                             f"{array.shape}; mix channels to mono first (e.g. x.mean(axis=1) for (samples, channels))")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, rejected just below
        waveform = np.ascontiguousarray(_pcm_to_float(array, name), dtype=np.float32)
    try:
        return check_samples(waveform, name)
    except AudioLoadError as err:  # the fix for an array is not re-exporting a file
        raise AudioLoadError(str(err).replace("the file is corrupt, re-export it", "replace them (e.g. np.nan_to_num)")
                             .replace("normalise the file", "normalise it")) from None


def _pcm_to_float(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128) / 128
    if np.issubdtype(array.dtype, np.signedinteger):
        return (array / 2.0 ** (8 * array.dtype.itemsize - 1)).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):  # bool, complex, uint16..., objects: no agreed scaling
        raise AudioLoadError(f"{name}: samples of dtype {array.dtype} are not audio; pass float (-1..1), "
                             "int16/int32 or uint8 PCM")
    return array
