"""Hostile mirrors and full disks: pinned checksums win, sizes are capped, every failure is one line and
leaves no partial file, and one bad file does not stop the others."""
from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np
import py7zr
import pytest

from audiocap import cli
from audiocap.download import TARGETS, download_clotho, extract_7z, fetch
from audiocap.errors import DownloadError
from tests.test_data_download import clotho_archive, clotho_record, md5, server  # noqa: F401  (fixtures)


def pin(monkeypatch, target, files, **changes):
    record = dataclasses.replace(TARGETS[target], pinned_md5={n: md5(b) for n, b in files.items()}, **changes)
    monkeypatch.setitem(TARGETS, target, record)


def test_a_mirror_serving_other_files_with_matching_metadata_is_refused(server, clotho_record, tmp_path, monkeypatch,
                                                                       capsys):
    pin(monkeypatch, "clotho", clotho_record)
    server.files["/records/4783391/files/clotho_captions_development.csv"] = b"file_name,caption_1\nx.wav,evil\n"
    server.add_record(4783391, {**clotho_record, "clotho_captions_development.csv": b"file_name,caption_1\nx.wav,evil\n"})
    dest = tmp_path / "clotho"
    assert cli.main(["download", "clotho", "--dest", str(dest), "--base-url", server.url, "--allow-http",
                     "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "verified" not in captured.out and "Traceback" not in captured.err
    assert "clotho_captions_development.csv: record 4783391" in captured.err
    assert "1 of 9 files failed (clotho_captions_development.csv" in captured.err
    # every other file was fetched, verified and extracted all the same
    assert not (dest / "clotho_captions_development.csv").exists()
    assert (dest / "clotho_captions_validation.csv").read_bytes() == clotho_record["clotho_captions_validation.csv"]
    assert (dest / "audio" / "validation" / "Clamp.wav").is_file()


def test_a_corrupt_file_does_not_stop_the_others(server, clotho_record, tmp_path, monkeypatch, capsys):
    pin(monkeypatch, "clotho", clotho_record)
    server.files["/records/4783391/files/clotho_audio_development.7z"] = b"garbage" * 100
    server.files.pop("/api/records/4783391")  # an offline mirror: the pinned sums alone decide
    with pytest.raises(DownloadError, match="1 of 9 files failed"):
        download_clotho(tmp_path, server.url, progress=False)
    assert "clotho_audio_development.7z" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == sorted(n for n in clotho_record if n.endswith(".csv"))
    assert not list(tmp_path.glob("*.part"))


def test_plain_http_needs_allow_http(server, tmp_path, capsys):
    assert cli.main(["download", "panns-cnn10", "--dest", str(tmp_path), "--base-url", server.url]) == 2
    assert "is plain http" in capsys.readouterr().err and server.requests == []


def test_a_server_sending_more_than_the_file_can_be_is_cut_off(server, tmp_path):
    server.files["/big.bin"] = b"x" * 300_000
    with pytest.raises(DownloadError, match="more than this file can be"):
        fetch(f"{server.url}/big.bin", tmp_path / "big.bin", "0" * 32, progress=False, max_bytes=100_000)
    assert not list(tmp_path.iterdir())


def test_an_archive_bomb_is_refused_before_extracting(tmp_path):
    archive = tmp_path / "bomb.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.writestr(b"\0" * 50_000_000, "validation/silence.wav")
    assert archive.stat().st_size < 100_000
    with pytest.raises(DownloadError, match="over 20x its own size"):
        extract_7z(archive, tmp_path / "audio")
    assert [p.name for p in (tmp_path / "audio").iterdir()] == []


def test_an_encrypted_archive_is_one_error_and_no_file(tmp_path):
    archive = tmp_path / "locked.7z"
    with py7zr.SevenZipFile(archive, "w", password="secret") as z:
        z.writestr(b"RIFF" + b"\1" * 1000, "validation/a.wav")
    with pytest.raises(DownloadError, match="encrypted"):
        extract_7z(archive, tmp_path / "audio")
    assert [p.name for p in (tmp_path / "audio").iterdir()] == []


def test_a_full_disk_is_one_line_not_retried_and_leaves_nothing(server, small_disk):
    blob = np.random.default_rng(0).bytes(3_000_000)
    server.files["/blob.bin"] = blob
    with pytest.raises(DownloadError, match="No space left on device") as error:
        fetch(f"{server.url}/blob.bin", small_disk / "blob.bin", md5(blob), progress=False)
    assert "\n" not in str(error.value) and "mirror" not in str(error.value)
    assert len(server.requests) == 1 and not list(small_disk.iterdir())


def test_an_archive_larger_than_the_free_space_is_refused_up_front(tmp_path, small_disk):
    archive = tmp_path / "a.7z"
    noise = np.random.default_rng(0).bytes(2_000_000)  # incompressible: the ratio check passes
    with py7zr.SevenZipFile(archive, "w") as z:
        z.writestr(noise, "validation/a.wav")
    with pytest.raises(DownloadError, match="free"):
        extract_7z(archive, small_disk / "audio")
    assert [p.name for p in (small_disk / "audio").iterdir()] == []


def test_spice_jars_from_an_unpinned_zip_must_be_those_pinned(server, tmp_path, monkeypatch):
    """SPICE-1.0.zip has no published checksum: the jars taken from it are held to the sha256 of pycocoevalcap
    1.2's copies, and one that differs is deleted and named."""
    from audiocap.metrics import spice

    package = spice.pycocoevalcap_dir()
    if package is None:
        pytest.skip("pycocoevalcap (the test extra) is not installed")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in spice.SPICE_JARS_SHA256:
            body = (package / "spice" / name).read_bytes()
            zf.writestr(f"SPICE-1.0/{name}", body + b"tampered" if name == "lib/guava-19.0.jar" else body)
    server.files[f"/{spice.SPICE_ZIP}"] = archive.getvalue()
    monkeypatch.setattr(spice, "pycocoevalcap_dir", lambda: None)  # no wheel to copy them from: the zip is fetched
    dest = tmp_path / "spice"
    with pytest.raises(DownloadError, match="1 of SPICE's jars are missing or differ .* lib/guava-19.0.jar"):
        spice.download_spice(dest, base_url=server.url)
    assert not (dest / "lib" / "guava-19.0.jar").exists() and (dest / "spice-1.0.jar").is_file()
    assert not any(request[0].startswith("/stanford-corenlp") for request in server.requests)  # stopped before CoreNLP
