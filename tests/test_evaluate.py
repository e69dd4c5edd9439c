"""`audiocap evaluate` checks what it can before captioning (the long part), and keeps the captions when
scoring fails. Models and audio: the fixtures of conftest.py."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from audiocap.cli import main


def captions_csv(path: Path, audio_files: list[Path]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "caption_1", "caption_2"])
        for audio in audio_files:
            writer.writerow([audio.name, "a person walks on gravel", "someone is walking outside"])
    return path


@pytest.fixture
def argv(model_path, audio_dir, tmp_path) -> list[str]:
    csv_path = captions_csv(tmp_path / "captions.csv", sorted(audio_dir.iterdir()))
    return ["evaluate", "--model", str(model_path), "--captions", str(csv_path), "--audio-dir", str(audio_dir),
            "--out", str(tmp_path / "results"), "--beam", "1"]


@pytest.fixture
def no_captioning(monkeypatch):
    """Fail the test if any clip gets captioned: the errors below must come first."""
    from audiocap.caption import CaptioningPipeline

    def caption(*args, **kwargs):
        raise AssertionError("captioned before the error was detected")

    monkeypatch.setattr(CaptioningPipeline, "caption", caption)


@pytest.mark.parametrize("option, value, message", [
    ("--metrics", "bleu,foo", "unknown metrics ['foo']; choose from bleu"),
    ("--batch-size", "0", "expected a whole number of at least 1, not '0'"),
    ("--beam", "-1", "expected a whole number of at least 1"),
])
def test_bad_options_are_usage_errors(argv, no_captioning, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_out_that_is_a_file_fails_before_captioning(argv, tmp_path, no_captioning, capsys):
    (tmp_path / "afile").write_text("keep me")
    assert main([*argv, "--out", str(tmp_path / "afile")]) == 2
    assert f"--out {tmp_path / 'afile'}: not a folder; give a folder path" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_clips_too_long_for_the_model_fail_before_captioning(short_model_path, audio_dir, long_file, tmp_path,
                                                            no_captioning, capsys):
    folder = tmp_path / "audio"
    shutil.copytree(audio_dir, folder)
    shutil.copy(long_file, folder)
    csv_path = captions_csv(tmp_path / "captions.csv", sorted(folder.iterdir()))
    argv = ["evaluate", "--model", str(short_model_path), "--captions", str(csv_path), "--audio-dir", str(folder),
            "--out", str(tmp_path / "results")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "1 clip(s) longer than this model captions at once (9.3 s)" in err
    assert f"{folder / 'long.wav'} (12.0 s)" in err and "--segment" not in err  # evaluate has no --segment
    assert not (tmp_path / "results").exists()


def test_predictions_are_written_before_scoring(argv, tmp_path, monkeypatch, capsys):
    import audiocap.metrics
    from audiocap.errors import MetricError

    def failing_evaluate(*args, **kwargs):
        raise MetricError("meteor: Java not found")

    monkeypatch.setattr(audiocap.metrics, "evaluate", failing_evaluate)
    assert main(argv) == 2
    rows = list(csv.reader(open(tmp_path / "results" / "predictions.csv", newline="", encoding="utf-8")))
    assert rows[0] == ["file_name", "caption_predicted"] and len(rows) == 4 and all(r[1] for r in rows[1:])
    err = capsys.readouterr().err
    assert "Java not found" in err and "audiocap score" in err
    assert not (tmp_path / "results" / "scores.json").exists()


def test_evaluates_an_audiocaps_csv_with_missing_videos_when_told_to_skip(model_path, audio_dir, tmp_path, capsys):  # noqa: F811
    import json

    ids = [p.stem for p in sorted(audio_dir.iterdir())]  # AudioCaps audio is named by youtube id
    csv_path = tmp_path / "audiocaps_test.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        for n, yid in enumerate([*ids, "video_gone"]):
            writer.writerows([[2 * n, yid, 30, "a person walks on gravel"], [2 * n + 1, yid, 30, "someone walks"]])
    out = tmp_path / "results"
    argv = ["evaluate", "--model", str(model_path), "--captions", str(csv_path), "--audio-dir", str(audio_dir),
            "--out", str(out), "--beam", "1", "--metrics", "bleu,rouge_l"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "or use --skip-bad to skip the bad rows" in err and "missing audio: video_gone" in err
    assert not out.exists()

    assert main([*argv, "--skip-bad"]) == 0
    assert "using 3 of 4 items" in capsys.readouterr().err
    rows = list(csv.reader(open(out / "predictions.csv", newline="", encoding="utf-8")))
    assert [r[0] for r in rows] == ["file_name", *ids]  # keyed by youtube id, the missing video left out
    report = json.loads((out / "scores.json").read_text())
    assert (report["n_clips"], report["n_skipped"]) == (3, 1)

    # the predictions score again against the same AudioCaps CSV (the hint evaluate prints when scoring fails)
    assert main(["score", str(out / "predictions.csv"), "--references", str(csv_path), "--metrics", "bleu,rouge_l",
                 "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["rouge_l"] == pytest.approx(report["scores"]["rouge_l"])
