"""Files libsndfile cannot read (AAC in m4a/mp4), decoded by FFmpeg through PyAV: the same waveform as the
original up to the codec, through every path that reads audio (load, stream, duration, folders, captioning)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import soundfile as sf

from audiocap.audio import audio_duration, find_audio_files, load_audio, stream_audio
from audiocap.errors import AudioLoadError

av = pytest.importorskip("av")  # in the test extra: CI always has it


def write_aac(path, audio: np.ndarray, rate: int, container: str | None = None) -> None:
    """(n, channels) float32 -> AAC in an MP4-family container, encoded by PyAV's FFmpeg."""
    layout = "mono" if audio.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


@pytest.fixture(scope="module")
def clip_and_aac(clotho_clips, tmp_path_factory):
    """A real 44.1 kHz clip (first 6 s), as wav and as stereo AAC in .m4a."""
    audio, rate = sf.read(clotho_clips[0], frames=6 * 44100, dtype="float32", always_2d=True)
    folder = tmp_path_factory.mktemp("aac")
    sf.write(folder / "clip.wav", audio, rate)
    write_aac(folder / "clip.m4a", np.repeat(audio, 2, axis=1), rate)  # stereo: both channels equal
    return folder / "clip.wav", folder / "clip.m4a"


def aligned_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 2048) -> float:
    """Correlation of `a` against `b` at the lag that matches best (AAC prepends ~1024 priming samples)."""
    head = b[: len(b) // 2]
    lag = max(range(max_lag), key=lambda k: float(np.dot(a[k:k + len(head)], head)))
    n = min(len(a) - lag, len(b))
    return float(np.corrcoef(a[lag:lag + n], b[:n])[0, 1])


def test_m4a_decodes_to_the_original_waveform_up_to_the_codec(clip_and_aac):
    wav, m4a = clip_and_aac
    with pytest.raises(sf.LibsndfileError):  # what this file is about: libsndfile alone cannot read it
        sf.info(m4a)
    original, decoded = load_audio(wav, 32000), load_audio(m4a, 32000)
    assert decoded.dtype == np.float32 and decoded.ndim == 1  # stereo mixed to mono
    assert abs(len(decoded) - len(original)) <= 2048 * 32000 // 44100 + 1  # priming/padding of AAC frames
    assert aligned_correlation(decoded, original) > 0.99
    assert audio_duration(m4a) == pytest.approx(audio_duration(wav), abs=0.05)


def test_m4a_streams_in_chunks_equal_to_the_whole_decode(clip_and_aac):
    _, m4a = clip_and_aac
    whole = load_audio(m4a, 16000)
    chunks = list(stream_audio(m4a, 16000, chunk_samples=16000))
    assert all(len(c) == 16000 for c in chunks[:-1])
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5)


def test_folders_and_odd_names_reach_ffmpeg_files(clip_and_aac, tmp_path):
    _, m4a = clip_and_aac
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname.m4a")  # not UTF-8: PyAV gets a file object
    with open(os.fsencode(odd), "wb") as f:
        f.write(m4a.read_bytes())
    (tmp_path / "video.mp4").write_bytes(m4a.read_bytes())  # the MP4 family: same container
    files, missing = find_audio_files([str(tmp_path)])
    assert sorted(p.suffix for p in files) == [".m4a", ".mp4"] and missing == 0
    for path in files:
        assert aligned_correlation(load_audio(path, 32000), load_audio(m4a, 32000), max_lag=8) > 0.999


def test_a_truncated_m4a_and_a_non_audio_file_get_clear_errors(clip_and_aac, tmp_path):
    _, m4a = clip_and_aac
    data = m4a.read_bytes()
    (tmp_path / "cut.m4a").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.m4a").write_text("not audio at all")
    for name in ("cut.m4a", "notes.m4a"):
        with pytest.raises(AudioLoadError, match=f"{name}: (cannot decode audio|decoding failed|no audio stream)"):
            load_audio(tmp_path / name)


def test_without_pyav_the_error_says_how_to_read_the_file(clip_and_aac, monkeypatch):
    _, m4a = clip_and_aac
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(AudioLoadError, match=r"clip.m4a: \.m4a files are decoded by FFmpeg: install PyAV"):
        load_audio(m4a)


def test_captioning_and_audiocaps_datasets_take_m4a(clip_and_aac, model_path, tmp_path):  # noqa: F811
    import audiocap
    from audiocap.data.datasets import load_dataset

    wav, m4a = clip_and_aac
    model = audiocap.load_model(model_path, device="cpu")
    caption, = model.caption([m4a], beam_size=1)
    assert caption.strip()
    (tmp_path / "yt_id_1.m4a").write_bytes(m4a.read_bytes())  # yt-dlp's usual download
    (tmp_path / "audiocaps.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,yt_id_1,30,a man talks\n")
    item, = load_dataset(tmp_path / "audiocaps.csv", tmp_path)
    assert item.audio_path == tmp_path / "yt_id_1.m4a"
