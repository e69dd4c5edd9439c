"""The user surface: `audiocap caption`, `audiocap evaluate` and `audiocap.load_model(...).caption(...)`.

An untrained model is enough here: these tests check the plumbing (formats, batching, per-file
errors), not caption quality (see test_train.py). Audio: 4 s excerpts of real Clotho clips.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audiocap
import audiocap.caption
from audiocap.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_captions_paths_and_arrays(model_path, audio_dir):
    from audiocap.audio import load_audio

    model = audiocap.load_model(model_path, device="cpu")
    files = sorted(audio_dir.iterdir())
    waveform = load_audio(files[0], model.sample_rate)
    captions = model.caption([*files, waveform], beam_size=2, batch_size=2)
    assert len(captions) == 4 and all(isinstance(c, str) and c for c in captions)
    assert captions[3] == captions[0]  # an array at the model's rate is captioned like its file
    assert model.caption(files[0], beam_size=2) == captions[:1]


@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_caption_cli_formats(fmt, model_path, audio_dir, capsys):
    assert main(["caption", str(audio_dir), "--model", str(model_path), "--format", fmt, "--beam", "2"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in audio_dir.iterdir())
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["file_name", "caption_predicted"]
        assert sorted(r[0] for r in rows[1:]) == names and all(r[1] for r in rows[1:])
    elif fmt == "json":
        assert sorted(Path(r["file"]).name for r in json.loads(out)) == names
    else:
        assert len(out.strip().splitlines()) == 3 and all(": " in line for line in out.splitlines())


def test_caption_cli_reports_bad_files_and_captions_the_rest(model_path, audio_dir, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    good = sorted(audio_dir.iterdir())[0]
    argv = ["caption", str(broken), str(good), str(notes), str(tmp_path / "missing.wav"), "--model", str(model_path)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ") and len(captured.out.splitlines()) == 1
    for name in ("broken.wav", "notes.txt", "missing.wav"):
        assert f"error: {tmp_path / name}: " in captured.err


def test_missing_default_model_is_a_clear_error(monkeypatch, audio_dir, tmp_path, capsys):
    import audiocap.caption

    monkeypatch.setattr(audiocap.caption, "DEFAULT_MODEL", tmp_path / "default_model.safetensors")
    assert main(["caption", str(audio_dir)]) == 2
    assert "no bundled default model" in capsys.readouterr().err


def test_evaluate_cli_writes_predictions_and_scores(model_path, audio_dir, tmp_path):
    captions_csv = tmp_path / "captions.csv"
    with open(captions_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption_1", "caption_2"])
        for path in sorted(audio_dir.iterdir()):
            writer.writerow([path.name, "a person walks on gravel", "someone is walking outside"])
    out = tmp_path / "results"
    argv = ["evaluate", "--model", str(model_path), "--captions", str(captions_csv), "--audio-dir", str(audio_dir),
            "--out", str(out), "--beam", "1", "--metrics", "bleu,rouge_l"]
    assert main(argv) == 0
    rows = list(csv.reader(open(out / "predictions.csv", newline="", encoding="utf-8")))
    assert rows[0] == ["file_name", "caption_predicted"] and len(rows) == 4
    report = json.loads((out / "scores.json").read_text())
    scores = report["scores"]
    assert {"bleu_4", "rouge_l"} <= set(scores) and 0 <= scores["rouge_l"] <= 1
    assert report["precision"] == "fp32"  # evaluation scores the model as trained


def test_commands_import_torch_only_when_they_run():
    code = ("import sys; from audiocap.cli import COMMANDS, build_parser; [build_parser([name]) for name in COMMANDS];"
            "assert 'torch' not in sys.modules, 'eager torch import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_precision_choices(model_path, audio_dir):
    import torch

    from audiocap.errors import AudiocapError
    from audiocap.quantize import precision_available
    from audiocap.caption import decoder_precision

    files = sorted(audio_dir.iterdir())
    exact = audiocap.load_model(model_path, device="cpu", precision="fp32")
    assert exact.precision == "fp32"
    default = audiocap.load_model(model_path, device="cpu")
    assert default.precision == ("fp16" if precision_available("fp16") else "fp32")
    assert default.caption(files, beam_size=2) == exact.caption(files, beam_size=2)
    for precision in ("fp16", "int8"):
        if precision_available(precision):
            compact = audiocap.load_model(model_path, device="cpu", precision=precision)
            assert compact.precision == precision and all(compact.caption(files, beam_size=2))
    with pytest.raises(AudiocapError, match="precision must be one of"):
        audiocap.load_model(model_path, device="cpu", precision="bf16")
    with pytest.raises(AudiocapError, match="--precision fp32"):
        decoder_precision("int8", torch.device("cuda"))
    assert decoder_precision("auto", torch.device("cuda")) == "fp32"  # GPUs keep float32
    assert main(["caption", str(files[0]), "--model", str(model_path), "--precision", "int8"]) == 0


def test_segment_bounds():
    from audiocap.errors import AudiocapError
    from audiocap.caption import segment_bounds

    assert segment_bounds(100, 4, 10) == [(0, 40), (40, 80), (80, 100)]
    assert segment_bounds(90, 4, 10) == [(0, 40), (40, 90)]  # a 1 s sliver joins the window before it
    assert segment_bounds(30, 4, 10) == [(0, 30)]
    assert segment_bounds(0, 4, 10) == [(0, 0)]
    with pytest.raises(AudiocapError, match="positive"):
        segment_bounds(100, 0, 10)


def test_a_file_too_long_for_the_model_is_reported_and_the_rest_captioned(short_model_path, long_file, audio_dir,
                                                                          capsys):
    good = sorted(audio_dir.iterdir())[0]
    assert main(["caption", str(long_file), str(good), "--model", str(short_model_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ") and len(captured.out.splitlines()) == 1
    assert f"error: 1 clip(s) longer than this model captions at once (9.3 s): {long_file} (12.0 s)" in captured.err
    assert "--segment" in captured.err


@pytest.mark.parametrize("fmt", ["csv", "json", "text"])
def test_segment_option_captions_consecutive_windows(fmt, short_model_path, long_file, capsys):
    from audiocap.audio import load_audio

    argv = ["caption", str(long_file), "--model", str(short_model_path), "--segment", "5", "--format", fmt]
    assert main(argv) == 0
    out = capsys.readouterr().out
    model = audiocap.load_model(short_model_path, device="cpu")
    waveform = load_audio(long_file, model.sample_rate)
    rate = model.sample_rate
    expected = model.caption([waveform[: 5 * rate], waveform[5 * rate:]])  # 12 s: 0-5, then 5-12 (2 s joins)
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["file_name", "start_seconds", "end_seconds", "caption_predicted"]
        name = str(long_file)  # as given on the command line
        assert rows[1:] == [[name, "0.00", "5.00", expected[0]], [name, "5.00", "12.00", expected[1]]]
    elif fmt == "json":
        assert [(r["start"], r["end"], r["caption"]) for r in json.loads(out)] == [(0, 5, expected[0]),
                                                                                  (5, 12, expected[1])]
    else:
        assert out.splitlines() == [f"{long_file} [0.0-5.0 s]: {expected[0]}", f"{long_file} [5.0-12.0 s]: {expected[1]}"]


def test_segment_longer_than_the_model_covers_is_refused(short_model_path, long_file, capsys):
    from audiocap.errors import AudiocapError

    assert main(["caption", str(long_file), "--model", str(short_model_path), "--segment", "7"]) == 2
    assert "segment length must be above 0 and at most 6.2 s for this model" in capsys.readouterr().err
    with pytest.raises(AudiocapError, match="not 0 s"):
        audiocap.load_model(short_model_path, device="cpu").caption_segments(long_file, segment_seconds=0)


def test_python_api_long_inputs(short_model_path, long_file):
    from audiocap.audio import load_audio
    from audiocap.errors import AudiocapError

    model = audiocap.load_model(short_model_path, device="cpu")
    assert model.max_seconds == pytest.approx(8 / model.encoder.frame_rate)
    with pytest.raises(AudiocapError, match=r"longer than this model captions at once \(9.3 s\): input 0 \(12.0 s\).*model.caption_segments"):
        model.caption(load_audio(long_file, model.sample_rate))
    (segments,) = model.caption_segments(long_file, segment_seconds=4)
    assert [(s.start, s.end) for s in segments] == [(0, 4), (4, 8), (8, 12)]
    assert [s.caption for s in segments] == model.caption(
        [load_audio(long_file, model.sample_rate)[i * 4 * model.sample_rate:(i + 1) * 4 * model.sample_rate]
         for i in range(3)])


def test_batches_hold_bounded_audio_and_long_clips_are_encoded_in_chunks(model_path, long_file, monkeypatch):
    import audiocap.caption
    from audiocap.audio import load_audio

    model = audiocap.load_model(model_path, device="cpu")
    rate = model.sample_rate
    waveform = load_audio(long_file, rate)
    clips = [waveform[: 4 * rate], waveform[4 * rate: 7 * rate], waveform]
    alone = [model.caption(clip)[0] for clip in clips]
    assert model.caption(clips) == alone  # a clip's caption does not depend on the other clips of its batch
    batches, chunked = [], []
    caption_batch, encode_chunks = model.caption_batch, model.encoder.encode_chunks
    monkeypatch.setattr(model, "caption_batch", lambda ws, *a, **k: batches.append(len(ws)) or caption_batch(ws, *a, **k))
    monkeypatch.setattr(model.encoder, "encode_chunks", lambda chunks: chunked.append(1) or encode_chunks(chunks))
    monkeypatch.setattr(audiocap.caption, "BATCH_AUDIO_SECONDS", 9.0)  # 4 s + 3 s clips fit, 12 s goes alone
    monkeypatch.setattr(audiocap.caption, "CHUNK_SECONDS", 5.0)
    bounded = model.caption(clips)
    assert batches == [2, 1] and chunked == [1]  # the 12 s clip: alone, in chunks
    assert bounded[:2] == alone[:2] and bounded[2]


# ---------------------------------------------------------------------------------------------
# bad input: a clear error naming the input, and the other inputs still captioned


def test_empty_audio_is_an_error_not_a_caption(model_path, audio_dir, tmp_path, capsys):
    import numpy as np

    from audiocap.errors import AudiocapError

    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0), 16000)
    good = sorted(audio_dir.iterdir())[0]
    for extra in ([], ["--segment", "2"]):
        assert main(["caption", str(zero), str(good), "--model", str(model_path), *extra]) == 1
        captured = capsys.readouterr()
        assert f"error: {zero}: no audio samples" in captured.err and "zero.wav" not in captured.out
        assert captured.out.startswith(f"{good}")
    model = audiocap.load_model(model_path, device="cpu")
    with pytest.raises(AudiocapError, match="input 1: no audio samples"):
        model.caption([np.ones(8000, np.float32) * 0.1, np.zeros(0, np.float32)])
    with pytest.raises(AudiocapError, match="zero.wav: no audio samples"):
        model.caption_segments(zero)
    assert len(model.caption(np.full(3, 0.1, np.float32))) == 1  # very short is still fine


def test_integer_pcm_arrays_are_scaled_like_soundfile(model_path, audio_dir):
    import numpy as np

    from audiocap.audio import as_waveform, load_audio
    from audiocap.errors import AudiocapError

    model = audiocap.load_model(model_path, device="cpu")
    path = sorted(audio_dir.iterdir())[0]
    pcm16 = np.round(load_audio(path, model.sample_rate) * 16000).astype(np.int16)
    assert model.caption(pcm16) == model.caption(pcm16 / 32768.0)
    assert np.allclose(as_waveform(np.array([0, 128, 255], np.uint8), 16000), [-1, 0, 127 / 128])
    assert np.allclose(as_waveform(np.array([-2 ** 31, 2 ** 30], np.int32), 16000), [-1, 0.5])
    with pytest.raises(AudiocapError, match="dtype bool"):
        model.caption(np.ones(100, bool))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_arrays_are_an_error(model_path, bad):
    from audiocap.errors import AudiocapError

    model = audiocap.load_model(model_path, device="cpu")
    with pytest.raises(AudiocapError, match="input 0: contains NaN or infinite samples"):
        model.caption(np.full(16000, bad, np.float32))


def test_arrays_must_be_mono_1d(model_path):
    import torch

    from audiocap.errors import AudiocapError

    model = audiocap.load_model(model_path, device="cpu")
    wave = np.sin(np.arange(model.sample_rate) / 10).astype(np.float32) * 0.1
    for shape_bad in (np.stack([wave, wave], 1), np.stack([wave, wave]), wave[None]):
        for method in (model.caption, model.caption_segments):
            with pytest.raises(AudiocapError, match=rf"input 0: expected a 1-D float array \(mono\) at "
                                                    rf"{model.sample_rate} Hz, got shape \({shape_bad.shape[0]},"):
                method(shape_bad)
    assert model.caption(torch.from_numpy(wave)) == model.caption(wave)  # a 1-D tensor is a waveform
    with pytest.raises(AudiocapError, match="list of numbers; pass a waveform as np.asarray"):
        model.caption([0.0, 0.1, 0.2])
    with pytest.raises(AudiocapError, match="got bytes"):
        model.caption(b"dog.wav")
    with pytest.raises(AudiocapError, match="got float; pass file paths"):
        model.caption(0.5)
    with pytest.raises(AudiocapError, match="input 1: expected a file path .* got bytes"):
        model.caption([wave, b"dog.wav"])


def test_beam_and_batch_sizes_are_checked_up_front(model_path, audio_dir, capsys, monkeypatch):
    from audiocap.errors import AudiocapError

    monkeypatch.setattr(audiocap.caption, "load_model", lambda *a: pytest.fail("checked after loading"))
    for option, value in [("--beam", "0"), ("--beam", "-2"), ("--beam", "100000"), ("--beam", "x"), ("--beam", "1.5"),
                          ("--batch-size", "0"), ("--batch-size", "-1")]:
        with pytest.raises(SystemExit) as exit_:
            main(["caption", str(audio_dir), option, value])
        assert exit_.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    monkeypatch.undo()
    model = audiocap.load_model(model_path, device="cpu")
    wave = np.full(8000, 0.1, np.float32)
    for kwargs, message in [({"batch_size": 0}, "batch_size must be .* not 0"), ({"beam_size": 0}, "beam_size"),
                            ({"beam_size": 65}, "from 1 to 64, not 65"), ({"batch_size": 2.5}, "batch_size")]:
        with pytest.raises(AudiocapError, match=message):
            model.caption(wave, **kwargs)
        with pytest.raises(AudiocapError, match=message):
            model.caption_segments(wave, segment_seconds=1, **kwargs)


def test_unknown_or_unavailable_devices_are_named(model_path, audio_dir, capsys):
    import torch

    from audiocap.errors import AudiocapError
    from audiocap.caption import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    for device in ("bogus", "gpu", "cuda:x"):
        with pytest.raises(AudiocapError, match=f"unknown device '{device}'; choose cpu"):
            audiocap.load_model(model_path, device=device)
    if not torch.cuda.is_available():
        with pytest.raises(AudiocapError, match="device 'cuda' is not available here; choose cpu"):
            resolve_device("cuda")
    assert main(["caption", str(audio_dir), "--model", str(model_path), "--device", "bogus"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown device 'bogus'; choose cpu")


def test_a_model_folder_is_named_as_such(tmp_path):
    from audiocap.errors import CheckpointError

    with pytest.raises(CheckpointError, match=f"{tmp_path}: is a folder; pass the model file"):
        audiocap.load_model(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "json", "text"])
def test_odd_file_names_keep_every_format_valid(fmt, model_path, audio_dir, tmp_path, capsys):
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    source = sorted(audio_dir.iterdir())[0]
    names = ["new\nline.flac", "comma, \"quote\".wav", os.fsdecode(b"bad\xffname.wav")]
    for name in names:
        (folder / name).write_bytes(source.read_bytes())
    assert main(["caption", str(folder), "--model", str(model_path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert sorted(r[0] for r in rows[1:]) == sorted(["new\nline.flac", "comma, \"quote\".wav", "bad\\xffname.wav"])
    elif fmt == "json":
        assert sorted(Path(r["file"]).name for r in json.loads(out)) == sorted(names)
    else:
        assert len(out.splitlines()) == 3 and f"{folder}/new\\nline.flac: " in out and "bad\\xffname.wav: " in out


def test_a_closed_pipe_ends_quietly(model_path, audio_dir, tmp_path):
    import os

    for i in range(4):
        (tmp_path / f"clip{i}.flac").write_bytes(sorted(audio_dir.iterdir())[1].read_bytes())
    process = subprocess.Popen([sys.executable, "-m", "audiocap", "caption", str(tmp_path), "--model", str(model_path),
                                "--batch-size", "2", "--beam", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.stdout.readline().startswith(str(tmp_path / "clip0.flac").encode())
    process.stdout.close()  # like `| head -1`
    assert process.wait(timeout=120) == 141
    assert b"Traceback" not in process.stderr.read()
