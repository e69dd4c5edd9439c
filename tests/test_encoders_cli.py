"""`audiocap encoders` and `audiocap tag`, run in-process through the real dispatcher."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from audiocap.cli import main
from tests.test_encoders import CNN10_CHANNELS, official_panns_state_dict, save_official_checkpoint


def test_encoders_lists_all(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("panns-cnn10", "panns-cnn14", "aisfx", "scratch-cnn10"))
    assert main(["encoders", "--json"]) == 0
    assert "aisfx" in json.loads(capsys.readouterr().out)


def test_tag_reports_bad_files_and_tags_the_others(tmp_path, capsys):
    checkpoint = tmp_path / "Cnn10_mAP=0.380.pth"
    save_official_checkpoint(checkpoint, official_panns_state_dict(CNN10_CHANNELS))
    good = tmp_path / "good.flac"
    sf.write(good, np.random.default_rng(0).uniform(-0.3, 0.3, (22050, 2)), 22050)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(100), 8000)

    code = main(["tag", str(good), str(bad), str(silent), "--encoder", "panns-cnn10",
                 "--checkpoint", str(checkpoint), "--top-k", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    results = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in results] == [str(good), str(bad), str(silent)]
    for result in (results[0], results[2]):
        assert len(result["tags"]) == 3 and all(0 <= t["probability"] <= 1 and t["label"] for t in result["tags"])
    assert "bad.wav" in results[1]["error"]
    assert "error: " in captured.err and "bad.wav" in captured.err and "Traceback" not in captured.err

    assert main(["tag", str(good), "--encoder", "panns-cnn10", "--checkpoint", str(checkpoint)]) == 0
    assert capsys.readouterr().out.startswith(str(good) + "\n  0.")


def test_tag_without_a_valid_checkpoint_prints_the_fix(tmp_path, capsys):
    assert main(["tag", "x.wav", "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.pth" in err and "audiocap download panns-cnn14" in err


def test_tag_refuses_empty_audio_folders_and_bad_top_k(tmp_path, capsys):
    checkpoint = tmp_path / "Cnn10_mAP=0.380.pth"
    save_official_checkpoint(checkpoint, official_panns_state_dict(CNN10_CHANNELS))
    good, zero = tmp_path / "good.wav", tmp_path / "zero.wav"
    sf.write(good, np.random.default_rng(0).uniform(-0.3, 0.3, 8000), 16000)
    sf.write(zero, np.zeros(0), 16000)
    folder = tmp_path / "mix"
    folder.mkdir()
    code = main(["tag", str(zero), str(folder), str(good), "--encoder", "panns-cnn10", "--checkpoint", str(checkpoint),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert [json.loads(line).get("tags") is not None for line in captured.out.splitlines()] == [False, False, True]
    assert f"error: {zero}: no audio samples" in captured.err
    assert f"error: {folder}: is a folder, not an audio file" in captured.err
    for top_k in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_:
            main(["tag", str(good), "--checkpoint", str(checkpoint), "--top-k", top_k])
        assert exit_.value.code == 2
        assert "argument --top-k: expected a whole number of at least 1" in capsys.readouterr().err
