"""The three dataset kinds, loaded from the real shared CSVs (audio where present)."""
from __future__ import annotations

import csv
import shutil

import pytest

from audiocap.data import datasets
from audiocap.errors import DataError


def test_clotho_validation_from_the_real_csv_and_clips(shared_data, clotho_clips):
    items = datasets.clotho(shared_data / "clotho", "validation")
    assert len(items) == 1045 and all(len(item.captions) == 5 for item in items)
    present = sorted(item.audio_path for item in items if item.audio_path.exists())
    assert present == clotho_clips and len(present) == 15
    first = items[0]
    assert first.key == "noisy stuff groceries paper bag cookie metallic case cling clang.wav"
    assert first.captions[0] == "The person is rummaging through the pans while looking for something."


@pytest.mark.parametrize("split, n", [("development", 3839), ("evaluation", 1045)])
def test_clotho_other_splits(shared_data, split, n):
    items = datasets.clotho(shared_data / "clotho", split)
    assert len(items) == n and len({item.key for item in items}) == n


def test_clotho_unknown_split_names_the_choices(shared_data):
    with pytest.raises(DataError, match="development, validation, evaluation"):
        datasets.clotho(shared_data / "clotho", "train")


def test_audiocaps_groups_rows_per_youtube_id(shared_data, tmp_path):
    csv_path = shared_data / "audiocaps" / "val.csv"
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    items = datasets.audiocaps(csv_path, tmp_path)
    assert sum(len(item.captions) for item in items) == len(rows) == 2475
    assert len(items) == len({r["youtube_id"] for r in rows}) < len(rows)
    first = items[0]
    assert first.key == rows[0]["youtube_id"] == "vfY_TJq7n_U"
    assert first.captions == [r["caption"] for r in rows if r["youtube_id"] == first.key]
    assert len(first.captions) > 1


def test_audiocaps_finds_user_audio_by_youtube_id_any_extension(shared_data, clotho_clips, tmp_path):
    shutil.copy(clotho_clips[0], tmp_path / "vfY_TJq7n_U.flac")  # the name is what matters here
    items = {item.key: item for item in datasets.audiocaps(shared_data / "audiocaps" / "val.csv", tmp_path)}
    assert items["vfY_TJq7n_U"].audio_path == tmp_path / "vfY_TJq7n_U.flac"
    assert items["tw76HGONaKg"].audio_path == tmp_path / "tw76HGONaKg.wav"  # missing: validation reports it


def test_any_folder_with_a_captions_csv_of_any_width(tmp_path):
    (tmp_path / "captions.csv").write_text(
        "\ufefffile_name,caption_2,caption_1,caption_10\n"  # BOM, and columns out of order
        "dog.wav,second,first,tenth\n"
        "rain.flac,only one\n",
        encoding="utf-8",
    )
    dog, rain = datasets.load_captions_csv(tmp_path / "captions.csv", tmp_path / "audio")
    assert dog.captions == ["first", "second", "tenth"] and dog.audio_path == tmp_path / "audio" / "dog.wav"
    assert rain.captions == ["", "only one", ""]  # kept as written: validation reports the empty ones


def test_captions_csv_with_wrong_header_says_what_it_found(tmp_path):
    (tmp_path / "bad.csv").write_text("path,text\na.wav,hello\n")
    with pytest.raises(DataError, match=r"bad.csv: expected columns file_name,caption_1..caption_N, found path,text"):
        datasets.load_captions_csv(tmp_path / "bad.csv", tmp_path)
    with pytest.raises(DataError, match="not found"):
        datasets.load_captions_csv(tmp_path / "missing.csv", tmp_path)


def test_read_csv_is_the_one_reader_and_its_errors_name_the_file(tmp_path):
    (tmp_path / "bom.csv").write_text("\ufefffile_name,caption_1\na.wav,x\n", encoding="utf-8")
    assert datasets.read_csv(tmp_path / "bom.csv") == (["file_name", "caption_1"], [{"file_name": "a.wav", "caption_1": "x"}])
    (tmp_path / "latin1.csv").write_bytes("file_name,caption_1\ncafé.wav,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.csv: not a UTF-8 CSV"):
        datasets.read_csv(tmp_path / "latin1.csv")
    with pytest.raises(DataError, match="gone.csv: predictions CSV not found"):
        datasets.read_csv(tmp_path / "gone.csv", what="predictions CSV")
    with pytest.raises(DataError, match="cannot read"):
        datasets.read_csv(tmp_path)


def test_short_row_without_file_name_is_kept_for_validation_to_report(tmp_path):
    """file_name not first and a row cut short: csv leaves it None; the item gets key "" and its row number."""
    (tmp_path / "w.csv").write_text("caption_1,file_name\nfoo\nbar,b.wav\n")
    short, good = datasets.load_captions_csv(tmp_path / "w.csv", tmp_path)
    assert (short.key, short.captions, short.row) == ("", ["foo"], 2)
    assert (good.key, good.audio_path, good.row) == ("b.wav", tmp_path / "b.wav", 3)
    (tmp_path / "ac.csv").write_text("audiocap_id,caption,youtube_id\n1,a dog\n2,rain,abc\n")
    no_id, abc = datasets.audiocaps(tmp_path / "ac.csv", tmp_path)
    assert (no_id.key, no_id.row, abc.key, abc.row) == ("", 2, "abc", 3)
