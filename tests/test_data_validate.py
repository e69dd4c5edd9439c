"""Validation lists every bad row, with counts; training refuses bad data unless told to skip it."""
from __future__ import annotations

import shutil

import pytest

from audiocap import cli
from audiocap.data.datasets import clotho, load_captions_csv
from audiocap.data.validate import check_items, validate_items
from audiocap.errors import DataError


@pytest.fixture
def broken_dataset(tmp_path, clotho_clips):
    """Two good real clips, one truncated, one not audio, two missing, a duplicate row, empty captions."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for clip in clotho_clips[:2]:
        shutil.copy(clip, audio / clip.name)
    (audio / "truncated.wav").write_bytes(clotho_clips[2].read_bytes()[:30])
    (audio / "notes.wav").write_text("this is not audio")
    good1, good2 = clotho_clips[0].name, clotho_clips[1].name
    (tmp_path / "captions.csv").write_text(
        "file_name,caption_1,caption_2\n"
        f"{good1},a train passes,a train goes by\n"
        f"{good2},water runs,\n"
        "truncated.wav,x,y\n"
        "notes.wav,x,y\n"
        "gone1.wav,x,y\n"
        "gone2.wav,x,y\n"
        f"{good1},again,again\n"
    )
    return load_captions_csv(tmp_path / "captions.csv", audio)


def test_report_lists_every_bad_row_with_counts(broken_dataset, clotho_clips):
    report = validate_items(broken_dataset)
    assert not report.ok
    assert [i.key for i in report.missing] == ["gone1.wav", "gone2.wav"]
    assert sorted(i.key for i, _ in report.corrupt) == ["notes.wav", "truncated.wav"]
    assert report.duplicates == {clotho_clips[0].name: 2}
    assert [(i.key, numbers) for i, numbers in report.empty_captions] == [(clotho_clips[1].name, [2])]
    summary = report.summary()
    assert summary.splitlines()[0] == (
        "7 items: 2 missing audio, 2 corrupt audio, 1 duplicated keys, 1 with empty captions")
    for key in ["gone1.wav", "gone2.wav", "truncated.wav", "notes.wav", clotho_clips[0].name, clotho_clips[1].name]:
        assert key in summary


def test_training_refuses_bad_rows_unless_told_to_skip(broken_dataset, clotho_clips):
    with pytest.raises(DataError, match="gone2.wav"):
        check_items(broken_dataset, progress=False)
    usable = check_items(broken_dataset, skip_bad=True, progress=False)
    assert [(i.key, i.captions) for i in usable] == [
        (clotho_clips[0].name, ["a train passes", "a train goes by"]),  # first of the duplicates
        (clotho_clips[1].name, ["water runs"]),  # the empty caption dropped
    ]


def test_real_clotho_validation_split(shared_data):
    items = clotho(shared_data / "clotho", "validation")
    report = validate_items(items)
    assert (len(report.missing), len(report.corrupt), report.duplicates, report.empty_captions) == (1030, 0, {}, [])
    assert check_items([i for i in items if i.audio_path.exists()], progress=False) != []


def test_cli_validate_prints_the_report_and_fails(broken_dataset, tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "captions.csv"), "--audio-dir", str(tmp_path / "audio")]) == 1
    out = capsys.readouterr().out
    assert "2 missing audio" in out and "missing audio: gone1.wav" in out and "corrupt audio: notes.wav" in out


def test_cli_validate_reads_audiocaps_csvs(shared_data, tmp_path, capsys):
    assert cli.main(["validate", str(shared_data / "audiocaps" / "val.csv"), "--audio-dir", str(tmp_path)]) == 1
    assert "missing audio: vfY_TJq7n_U" in capsys.readouterr().out


def test_files_known_to_decode_are_not_decoded_again(broken_dataset, monkeypatch):
    """Training passes the clips the feature cache holds as `decoded`: they are only checked to exist."""
    import audiocap.data.validate as validate

    seen = []
    monkeypatch.setattr(validate, "decode_problem", lambda path: seen.append(path.name))
    known = {broken_dataset[0].audio_path, broken_dataset[1].audio_path}
    report = validate_items(broken_dataset, decoded=known)
    assert sorted(seen) == ["notes.wav", "truncated.wav"]
    assert [i.key for i in report.missing] == ["gone1.wav", "gone2.wav"]


def test_feature_cache_knows_which_files_it_holds(tmp_path, clotho_clips):
    import torch

    from audiocap.data.cache import FeatureCache
    from audiocap.encoders import create_encoder

    torch.manual_seed(0)
    encoder = create_encoder("scratch-cnn10", channels=(4, 4, 4, 8)).freeze()
    cache = FeatureCache(tmp_path)
    cache.get(encoder, clotho_clips[0])
    assert cache.cached(encoder, clotho_clips[:2]) == {clotho_clips[0]}


def test_validate_rejects_a_latin1_csv_with_a_clear_error(tmp_path, capsys):
    """The validate path reads the CSV with the loaders' own reader: a Latin-1 file is a DataError
    saying it is not UTF-8 (not a UnicodeDecodeError traceback), in the API and in the CLI."""
    from audiocap.data.datasets import load_dataset
    from audiocap.errors import AudiocapError

    for name, header in [("captions.csv", "file_name,caption_1"), ("audiocaps.csv", "audiocap_id,youtube_id,start_time,caption")]:
        row = "café.wav,un café crème" if name == "captions.csv" else "1,abc,0,un café crème"
        (tmp_path / name).write_bytes(f"{header}\n{row}\n".encode("latin-1"))
        with pytest.raises(DataError, match=rf"{name}: not a UTF-8 CSV .*re-save it as UTF-8") as error:
            load_dataset(tmp_path / name, tmp_path)
        assert isinstance(error.value, AudiocapError)
        assert cli.main(["validate", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "not a UTF-8 CSV" in err and "Traceback" not in err


def test_validate_dispatches_on_the_header_and_keeps_its_errors(tmp_path):
    from audiocap.data.datasets import load_dataset

    (tmp_path / "caps.csv").write_text("\ufefffile_name,caption_1\na.wav, hello \n", encoding="utf-8")
    assert [(i.key, i.captions) for i in load_dataset(tmp_path / "caps.csv", tmp_path)] == [("a.wav", ["hello"])]
    (tmp_path / "ac.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,0,a dog\n2,abc,0,barks\n")
    assert [(i.key, i.captions) for i in load_dataset(tmp_path / "ac.csv", tmp_path)] == [("abc", ["a dog", "barks"])]
    (tmp_path / "bad.csv").write_text("path,text\na.wav,hello\n")
    with pytest.raises(DataError, match="expected columns file_name,caption_1..caption_N, found path,text"):
        load_dataset(tmp_path / "bad.csv", tmp_path)
    (tmp_path / "bad_ac.csv").write_text("youtube_id,text\nabc,hello\n")
    with pytest.raises(DataError, match="expected AudioCaps columns audiocap_id,youtube_id,start_time,caption"):
        load_dataset(tmp_path / "bad_ac.csv", tmp_path)
    with pytest.raises(DataError, match="missing.csv: captions CSV not found; check the path"):
        load_dataset(tmp_path / "missing.csv", tmp_path)
    with pytest.raises(DataError, match=r"cannot read \(.*\); check the path"):
        load_dataset(tmp_path, tmp_path)  # a folder, not a CSV


def test_row_without_file_name_is_a_bad_row_not_a_crash(tmp_path, capsys):
    """`file_name` not the first column and a short row: reported with its row number (validate and score)."""
    (tmp_path / "w.csv").write_text("caption_1,file_name\nfoo\n")
    assert cli.main(["validate", str(tmp_path / "w.csv")]) == 1
    out = capsys.readouterr().out
    assert "1 without a file name" in out and "no file name: row 2" in out
    assert "missing audio: " not in out  # reported once, as what it is
    items = load_captions_csv(tmp_path / "w.csv", tmp_path)
    with pytest.raises(DataError, match="no file name: row 2"):
        check_items(items, progress=False)
    with pytest.raises(DataError, match="^dataset has no usable rows: every row is bad; fix them\n"):
        check_items(items, skip_bad=True, progress=False)  # training on nothing would fail deep inside
    (tmp_path / "pred.csv").write_text("file_name,caption_predicted\na.wav,a dog\n")
    assert cli.main(["score", str(tmp_path / "pred.csv"), "--references", str(tmp_path / "w.csv"), "--metrics", "bleu"]) == 2
    err = capsys.readouterr().err
    assert "w.csv: 1 rows have no file_name (row 2" in err and "Traceback" not in err


def test_refusal_names_the_callers_skip_option_and_no_other(broken_dataset):
    with pytest.raises(DataError, match=r"^dataset has problems; fix them, or use skip_bad_items=true to skip the bad rows\n"):
        check_items(broken_dataset, progress=False, skip_hint="skip_bad_items=true")
    with pytest.raises(DataError, match=r"^dataset has problems; fix them\n7 items"):  # e.g. `evaluate`: it has no such option
        check_items(broken_dataset, progress=False)


def test_cli_validate_workers_must_be_positive(tmp_path, capsys):
    (tmp_path / "caps.csv").write_text("file_name,caption_1\na.wav,x\n")
    for bad in ["0", "-2", "two"]:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["validate", str(tmp_path / "caps.csv"), "--workers", bad])
        assert exit_.value.code == 2 and "argument --workers" in capsys.readouterr().err


def test_errors_list_a_few_problems_of_each_kind_and_validate_lists_all(shared_data):
    # the real validation CSV with 15 of its 1045 clips present: 1030 missing files
    items = clotho(shared_data / "clotho", "validation")
    with pytest.raises(DataError) as error:
        check_items(items, progress=False)
    lines = str(error.value).splitlines()
    assert lines[1] == "1045 items: 1030 missing audio, 0 corrupt audio, 0 duplicated keys, 0 with empty captions"
    assert sum(line.startswith("  missing audio: ") for line in lines) == 10
    assert lines[-1] == "  ... and 1020 more missing audio (`audiocap validate` lists all)"
    full = validate_items(items).summary()
    assert sum(line.startswith("  missing audio: ") for line in full.splitlines()) == 1030


def test_a_csv_with_only_its_header_is_refused_by_every_command(tmp_path, capsys):
    # training failed after its first epoch (zero validation tokens), evaluation captioned nothing, validate said ok
    (tmp_path / "header_only.csv").write_text("file_name,caption_1\n")
    (tmp_path / "pred.csv").write_text("file_name,caption_predicted\n")
    (tmp_path / "pred_one.csv").write_text("file_name,caption_predicted\na.wav,a dog\n")
    for argv in (["validate", str(tmp_path / "header_only.csv")],
                 ["evaluate", "--captions", str(tmp_path / "header_only.csv"), "--audio-dir", str(tmp_path),
                  "--out", str(tmp_path / "out")],
                 ["score", str(tmp_path / "pred_one.csv"), "--references", str(tmp_path / "header_only.csv")]):
        assert cli.main(argv) == 2, argv
        assert "header_only.csv: no rows below the header" in capsys.readouterr().err
    (tmp_path / "refs.csv").write_text("file_name,caption_1\na.wav,a dog barks\n")
    assert cli.main(["score", str(tmp_path / "pred.csv"), "--references", str(tmp_path / "refs.csv")]) == 2
    assert "pred.csv: no predictions below the header" in capsys.readouterr().err
    config = tmp_path / "config.yaml"
    config.write_text(f"train_csv: {tmp_path / 'header_only.csv'}\ntrain_audio_dir: {tmp_path}\n"
                      f"val_csv: {tmp_path / 'header_only.csv'}\nval_audio_dir: {tmp_path}\n"
                      f"out_dir: {tmp_path / 'run'}\ncache_dir: {tmp_path / 'cache'}\nencoder: aisfx\n")
    assert cli.main(["train", str(config)]) == 2
    assert "header_only.csv: no rows below the header" in capsys.readouterr().err
