"""audio.py: decoding, resampling, streaming, and the log-mel front end against librosa."""
from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from audiocap.audio import as_waveform, audio_duration, display_path, load_audio, stream_audio
from audiocap.mel import PANNS_MEL, MelSettings, log_mel_spectrogram, mel_filters
from audiocap.errors import AudioLoadError


def librosa_log_mel(waveform: np.ndarray, s: MelSettings = PANNS_MEL) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, win_length=s.n_fft, window="hann",
        center=True, pad_mode="reflect", power=2.0, n_mels=s.n_mels, fmin=s.f_min, fmax=s.f_max)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T  # (T, n_mels)


def test_log_mel_equals_librosa_on_every_clotho_clip(clotho_clips):
    assert clotho_clips, "no Clotho validation clips found"
    for path in clotho_clips:
        waveform = load_audio(path, sample_rate=32000).astype(np.float64)
        ours = log_mel_spectrogram(waveform).numpy()
        reference = librosa_log_mel(waveform)
        assert ours.shape == reference.shape == (1 + len(waveform) // 320, 64)
        assert np.abs(ours - reference).max() <= 1e-3, path.name


@pytest.mark.parametrize("settings, norm", [(PANNS_MEL, "slaney"),
                                            (MelSettings(44100, 2048, 1024, 96, 0.0, 22050.0, "htk", "unit_sum"), 1.0)])
def test_mel_filters_equal_librosa(settings, norm):
    reference = librosa.filters.mel(sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
                                    fmin=settings.f_min, fmax=settings.f_max, htk=settings.mel_scale == "htk",
                                    norm=norm, dtype=np.float64)
    np.testing.assert_allclose(mel_filters(settings), reference.T, atol=1e-12)


def test_float32_log_mel_is_close_and_batched():
    waveform = torch.randn(3, 16000) * 0.1
    batched = log_mel_spectrogram(waveform)
    assert batched.shape == (3, 51, 64) and batched.dtype == torch.float32
    np.testing.assert_allclose(batched[1].numpy(), librosa_log_mel(waveform[1].numpy().astype(np.float64)), atol=1e-2)


@pytest.mark.parametrize("n", [0, 1, 100, 512])
def test_empty_short_and_silent_audio_give_finite_features(n):
    features = log_mel_spectrogram(np.zeros(n, dtype=np.float32))
    assert features.shape[-1] == 64 and len(features) >= 1
    assert torch.isfinite(features).all() and (features == -100.0).all()  # 10·log10(amin)


@pytest.mark.parametrize("fmt, ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_load_audio_formats_channels_and_rates(tmp_path, fmt, ext):
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    path = tmp_path / f"tone.{ext}"
    sf.write(path, stereo, 48000, format=fmt)
    native = load_audio(path)
    assert native.dtype == np.float32 and native.ndim == 1
    resampled = load_audio(path, sample_rate=32000)
    assert resampled.dtype == np.float32 and abs(len(resampled) - 32000) < 2000  # mp3 adds codec padding
    assert 0.3 < np.abs(resampled).max() < 0.7  # channels averaged, not summed


def test_load_audio_many_channels_odd_rate(tmp_path):
    path = tmp_path / "six.wav"
    sf.write(path, np.ones((7919, 6)) * np.arange(6) / 10, 7919)
    waveform = load_audio(path, sample_rate=16000)
    assert abs(len(waveform) - 16000) <= 1
    assert abs(np.median(waveform) - 0.25) < 1e-3


def test_empty_file_loads_as_empty_waveform(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 2)), 44100)
    assert load_audio(path, sample_rate=32000).shape == (0,)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00garbage that is not audio" * 10, b"\x00" * 1000])
def test_unreadable_files_raise_audio_load_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioLoadError, match="broken.wav"):
        load_audio(path)


def test_missing_file_and_nan_samples(tmp_path):
    with pytest.raises(AudioLoadError, match="nothere.wav: no such file"):
        load_audio(tmp_path / "nothere.wav")
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="nan.wav: contains NaN"):
        load_audio(path)


def test_stream_audio_chunks_concatenate_to_load_audio(tmp_path):
    path = tmp_path / "noise.flac"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, (44100 * 3 + 17, 2)), 44100)
    chunks = list(stream_audio(path, 32000, chunk_samples=10000))
    assert all(len(c) == 10000 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 10000
    whole = load_audio(path, sample_rate=32000)
    streamed = np.concatenate(chunks)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=1e-3)


def write_long_silence(path, seconds: int, sample_rate: int) -> None:
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        block = (np.sin(np.arange(sample_rate) / 7) * 0.01).astype(np.float32)
        for _ in range(seconds):
            f.write(block)


def test_one_hour_stream_has_bounded_memory(tmp_path):
    path = tmp_path / "hour.wav"
    write_long_silence(path, 3600, 8000)  # decoded at 16 kHz the whole hour would be 230 MB
    tracemalloc.start()
    n, longest = 0, 0
    for chunk in stream_audio(path, 16000, chunk_samples=16000 * 60):
        n += len(chunk)
        longest = max(longest, len(chunk))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert abs(n - 3600 * 16000) <= 1 and longest == 16000 * 60
    chunk_bytes = 16000 * 60 * 4
    assert peak < 8 * chunk_bytes, f"peak {peak / 1e6:.1f} MB"  # a few one-minute chunks, not 230 MB


def test_non_utf8_file_names_load_and_print_safely(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.wav")
    sf.write(os.fsencode(name), np.full(1600, 0.25), 16000)
    assert np.allclose(load_audio(name), 0.25) and np.allclose(load_audio(Path(name)), 0.25)
    assert display_path(name).endswith("bad\\xffname.wav")
    with pytest.raises(AudioLoadError) as error:
        load_audio(name[:-4] + ".flac")
    assert str(error.value).encode("utf-8").endswith(b"bad\\xffname.flac: no such file")


def test_audio_duration_reads_the_header_of_any_file_name(tmp_path):
    # training and evaluation check clip lengths with it before any work: a non-UTF-8 name must not crash it
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.flac")
    sf.write(os.fsencode(name), np.zeros(40000), 16000)
    assert audio_duration(name) == 2.5
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioLoadError, match="text.wav: cannot decode audio"):
        audio_duration(tmp_path / "text.wav")


def test_a_folder_is_named_as_such(tmp_path):
    with pytest.raises(AudioLoadError, match=f"{tmp_path}: is a folder, not an audio file"):
        load_audio(tmp_path)


def test_as_waveform_checks_arrays():
    assert as_waveform(torch.ones(3, dtype=torch.float64), 16000).dtype == np.float32
    assert np.allclose(as_waveform(np.array([-32768, 16384], np.int16), 16000), [-1, 0.5])
    with pytest.raises(AudioLoadError, match=r"clip: expected a 1-D float array \(mono\) at 16000 Hz, got shape \(2, 3"):
        as_waveform(np.zeros((2, 3)), 16000, "clip")
    with pytest.raises(AudioLoadError, match="clip: contains NaN or infinite samples"):
        as_waveform(np.array([0, 1e300]), 16000, "clip")  # finite float64, inf as float32


def test_an_empty_file_is_named_as_empty(tmp_path):
    # libsndfile reports a 0-byte file as "does not exist or is not a regular file", which misleads
    (tmp_path / "empty.mp3").write_bytes(b"")
    for read in (load_audio, audio_duration):
        with pytest.raises(AudioLoadError, match=r"empty.mp3: file is empty \(0 bytes\)"):
            read(tmp_path / "empty.mp3")
