"""Hostile and broken audio: absurd headers refused before decoding, loud or NaN samples and every OS error a
per-file `error:` line, the other files still captioned, memory bounded; CSV output that round-trips."""
from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiocap.audio import find_audio_files, load_audio, scan_audio, stream_audio
from audiocap.caption import CaptionResult
from audiocap.cli import main
from audiocap.errors import AudioLoadError
from audiocap.cli.caption import CaptionWriter


def wav_with_rate(path, rate: int, n: int = 22000):
    sf.write(path, np.zeros(n, np.float32), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28], data[28:32] = struct.pack("<I", rate), struct.pack("<I", rate * 2)  # fmt chunk: rate, byte rate
    path.write_bytes(bytes(data))
    return path


def test_absurd_sample_rates_are_refused_from_the_header(tmp_path):
    for rate in (1, 10**7):
        path = wav_with_rate(tmp_path / f"r{rate}.wav", rate)
        for read in (lambda p: load_audio(p, 32000), scan_audio, lambda p: list(stream_audio(p, 32000, 32000))):
            with pytest.raises(AudioLoadError, match=f"its header says a sample rate of {rate} Hz"):
                read(path)


def test_too_long_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.flac"  # 20 minutes of silence at 8 kHz: a few KB of FLAC
    with sf.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        for _ in range(20):
            f.write(np.zeros(8000 * 60, np.float32))
    assert path.stat().st_size < 200_000
    with pytest.raises(AudioLoadError, match="1200 s of audio, more than the 60 s"):
        load_audio(path, 32000, max_seconds=60)


@pytest.mark.parametrize("value", [1e17, np.inf, np.nan])
def test_loud_or_non_finite_samples_are_a_per_file_error(tmp_path, value):
    path = tmp_path / "loud.wav"
    sf.write(path, np.array([0.0, value, 0.1] * 1000, np.float32), 16000, subtype="FLOAT")
    for read in (load_audio, scan_audio, lambda p: list(stream_audio(p, 16000, 1000))):
        with pytest.raises(AudioLoadError, match="loud.wav: (samples reach 1e\\+17|contains NaN)"):
            read(path)
    sf.write(path, np.array([0.0, 3.0, -2.0], np.float32), 16000, subtype="FLOAT")  # a little over full scale: kept
    assert load_audio(path).max() == 3.0


def test_os_errors_are_per_file_lines(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "ok.wav", np.zeros(1600), 16000)
    (folder / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    files, failed = find_audio_files([str(folder)])
    err = capsys.readouterr().err
    assert files == [folder / "ok.wav"] and failed == 2
    assert f"error: {folder / 'dangling.wav'}: broken symbolic link" in err
    assert f"error: {folder / 'loop.wav'}: cannot open it (Too many levels of symbolic links)" in err
    for name, message in (("dangling.wav", "broken symbolic link"), ("loop.wav", "Too many levels")):
        with pytest.raises(AudioLoadError, match=message):
            load_audio(folder / name)


def test_unreadable_files_and_folders(tmp_path):
    base = tmp_path / "shared"
    base.mkdir()
    sf.write(base / "ok.wav", np.zeros(1600), 16000)
    sf.write(base / "secret.wav", np.zeros(1600), 16000)
    os.chmod(base / "secret.wav", 0o000)
    (base / "locked").mkdir(mode=0o000)
    code = ("import sys\nfrom audiocap.audio import find_audio_files, load_audio\nfrom audiocap.errors import "
            "AudioLoadError\nfiles, failed = find_audio_files([sys.argv[1]])\nfor f in files:\n    try:\n"
            "        load_audio(f)\n    except AudioLoadError as e:\n        print('error:', e)\nprint(len(files), failed)")
    command = [sys.executable, "-c", code, str(base)]
    if os.geteuid() == 0:  # root reads everything: drop the capability that lets it (setpriv, util-linux)
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in run.stderr, run.stderr
    assert f"error: {base / 'locked'}: cannot list this folder (Permission denied)" in run.stderr
    assert f"error: {base / 'secret.wav'}: cannot open it (Permission denied)" in run.stdout
    assert run.stdout.strip().endswith("2 1")


def test_csv_round_trips_every_odd_name_and_caption(capsys):
    cells = ["a\rb.wav", "new\nline.wav", 'comma, "quote".wav', "emoji 🎵.wav", "=1+2.wav", "plain.wav"]
    writer = CaptionWriter("csv", segments=False)
    for name in cells:
        caption = f"caption of {name}"
        writer.write(Path(name), 0, 1, CaptionResult(caption, confidence=0.5, alternatives=[caption]))
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out, newline="")))
    assert rows[0] == ["file_name", "caption_predicted"]
    assert rows[1:] == [[name, f"caption of {name}"] for name in cells]
    safe = CaptionWriter("csv", segments=False, spreadsheet_safe=True)
    assert safe.csv_row(["=1+2.wav", "-x", "a dog"]) == "'=1+2.wav,'-x,a dog"


def test_folders_keep_names_apart_and_bad_files_do_not_lose_the_batch(model_path, audio_dir, tmp_path, capsys):
    clip = sorted(audio_dir.iterdir())[0]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.wav").write_bytes(clip.read_bytes())
    loud = tmp_path / "a" / "loud.wav"
    sf.write(loud, np.full(16000, 1e17, np.float32), 16000, subtype="FLOAT")
    os.chdir(tmp_path)
    assert main(["caption", "a", "b/x.wav", "--model", str(model_path), "--format", "csv"]) == 1
    captured = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(captured.out)))
    assert sorted(r[0] for r in rows[1:]) == ["b/x.wav", "x.wav"] and all(r[1] for r in rows[1:])
    assert "error: a/loud.wav: samples reach 1e+17" in captured.err
    assert main(["caption", "a", "b", "--model", str(model_path), "--format", "csv"]) == 1
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r[0] for r in rows[1:]) == ["a/x.wav", "b/x.wav"]  # would collide as x.wav


def test_segments_of_a_long_file_are_decoded_a_window_at_a_time(model_path, tmp_path):
    import tracemalloc

    import audiocap

    path = tmp_path / "hour.flac"  # one hour of near-silence at 16 kHz: 230 MB decoded at 32 kHz, 1 MB on disk
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC") as f:
        block = (np.sin(np.arange(16000 * 60) / 9) * 1e-3).astype(np.float32)
        for _ in range(60):
            f.write(block)
    pipeline = audiocap.load_model(model_path, device="cpu")
    tracemalloc.start()
    windows = [(a, b) for a, b, _, _ in pipeline.segment_windows(path, 60)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rate = pipeline.sample_rate
    assert windows == [(i * 60 * rate, (i + 1) * 60 * rate) for i in range(60)]
    assert peak < 8 * 60 * rate * 4, f"peak {peak / 1e6:.0f} MB"  # a few windows, not the hour
