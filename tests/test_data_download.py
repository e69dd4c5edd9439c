"""Downloads against a local Zenodo stand-in: Range requests, corruption, cut transfers, the record API."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import py7zr
import pytest
import soundfile

from audiocap import cli
from audiocap.data import datasets
from audiocap.download import BASE_URL_ENV, TARGETS, download_clotho, fetch
from audiocap.errors import DownloadError


class ZenodoStandIn(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) with Range support; switches break the next transfer of a path."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.corrupt_once: set[str] = set()  # flip a byte of the next transfer
        self.cut_once: dict[str, int] = {}  # send only this many bytes, then hang up
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def add_record(self, record_id: int, files: dict[str, bytes], publish: bool = True) -> None:
        for name, body in files.items():
            self.files[f"/records/{record_id}/files/{name}"] = body
        if publish:  # the metadata API as Zenodo serves it: files[].key, files[].checksum "md5:..."
            listing = [{"key": n, "size": len(b), "checksum": f"md5:{hashlib.md5(b).hexdigest()}"}
                       for n, b in files.items()]
            self.files[f"/api/records/{record_id}"] = json.dumps({"id": record_id, "files": listing}).encode()

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if not r[0].startswith("/api/")]


class RangeHandler(BaseHTTPRequestHandler):
    server: ZenodoStandIn

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        ranged = self.headers.get("Range")
        self.server.requests.append((path, ranged))
        body = self.server.files.get(path)
        if body is None:
            return self.send_error(404)
        if path in self.server.corrupt_once:
            self.server.corrupt_once.discard(path)
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        start = int(ranged.removeprefix("bytes=").split("-")[0]) if ranged else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(len(body) - start))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if path in self.server.cut_once:
            self.wfile.write(body[start:start + self.server.cut_once.pop(path)])
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    srv = ZenodoStandIn()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


BLOB = np.random.default_rng(0).bytes(3_000_000)  # several 1 MiB chunks


def test_fetch_verifies_and_skips_a_verified_file(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    dest = fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(BLOB), progress=False)
    assert dest.read_bytes() == BLOB and not (tmp_path / "blob.bin.part").exists()
    fetch(f"{server.url}/blob.bin", dest, md5(BLOB), progress=False)
    assert len(server.requests) == 1  # the second call downloaded nothing


def test_fetch_real_clotho_captions_against_the_pinned_md5(server, tmp_path, shared_data):
    body = (shared_data / "clotho" / "clotho_captions_validation.csv").read_bytes()
    server.files["/c.csv"] = body
    pinned = TARGETS["clotho"].pinned_md5["clotho_captions_validation.csv"]
    assert fetch(f"{server.url}/c.csv", tmp_path / "c.csv", pinned, progress=False).read_bytes() == body


def test_corrupt_transfer_is_fetched_again(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    server.corrupt_once.add("/blob.bin")
    dest = fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(BLOB), progress=False)
    assert dest.read_bytes() == BLOB
    assert server.requests == [("/blob.bin", None), ("/blob.bin", None)]


def test_corrupt_file_on_disk_is_fetched_again(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    (tmp_path / "blob.bin").write_bytes(b"not the file")
    assert fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(BLOB), progress=False).read_bytes() == BLOB


def test_cut_transfer_resumes_with_range(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    server.cut_once["/blob.bin"] = 1_234_567
    dest = fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(BLOB), progress=False)
    assert dest.read_bytes() == BLOB
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=1234567-")]


def test_partial_file_from_a_killed_run_resumes(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    (tmp_path / "blob.bin.part").write_bytes(BLOB[:1000])
    assert fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(BLOB), progress=False).read_bytes() == BLOB
    assert server.requests == [("/blob.bin", "bytes=1000-")]


def test_wrong_file_on_the_server_and_missing_file_fail_with_a_fix(server, tmp_path):
    server.files["/blob.bin"] = BLOB
    with pytest.raises(DownloadError, match="expected 0+; the server holds another file"):
        fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", "0" * 32, progress=False)
    assert len(server.requests) == 2 and not list(tmp_path.iterdir())
    with pytest.raises(DownloadError, match="HTTP 404.*--base-url"):
        fetch(f"{server.url}/nope.bin", tmp_path / "nope.bin", progress=False)


def tiny_wav(seconds: float = 0.2, rate: int = 44100) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def clotho_archive(split: str, names: list[str], tmp_path: Path) -> bytes:
    """A 7z with the official layout: one folder named after the split holding the wavs."""
    path = tmp_path / f"{split}.7z"
    with py7zr.SevenZipFile(path, "w") as z:
        for name in names:
            z.writestr(tiny_wav(), f"{split}/{name}")
    return path.read_bytes()


@pytest.fixture
def clotho_record(server, tmp_path, shared_data):
    """Record 4783391 with the real caption CSVs and small stand-in archives and metadata."""
    names = {"development": ["a.wav"], "validation": ["Clamp.wav", "car_1.wav"], "evaluation": ["b.wav"]}
    files = {}
    for split in datasets.CLOTHO_SPLITS:
        files[f"clotho_audio_{split}.7z"] = clotho_archive(split, names[split], tmp_path)
        files[f"clotho_captions_{split}.csv"] = (shared_data / "clotho" / f"clotho_captions_{split}.csv").read_bytes()
        files[f"clotho_metadata_{split}.csv"] = b"file_name,keywords,sound_id,sound_link,start_end_samples\n"
    assert set(files) == set(TARGETS["clotho"].pinned_md5)
    server.add_record(4783391, files)
    return files


def pin(monkeypatch, target: str, files: dict[str, bytes]) -> None:
    """The stand-in files' md5s as the pinned ones (the real archives are gigabytes)."""
    record = TARGETS[target]
    monkeypatch.setitem(TARGETS, target, dataclasses.replace(record, pinned_md5={n: md5(b) for n, b in files.items()}))


def test_download_clotho_end_to_end(server, clotho_record, tmp_path, monkeypatch):
    pin(monkeypatch, "clotho", clotho_record)
    dest = tmp_path / "clotho"
    download_clotho(dest, server.url, progress=False)
    for name, body in clotho_record.items():
        assert (dest / name).read_bytes() == body
    items = datasets.clotho(dest, "validation")
    assert len(items) == 1045
    assert sorted(i.key for i in items if i.audio_path.exists()) == ["Clamp.wav", "car_1.wav"]
    assert (dest / "audio" / "development" / "a.wav").exists()

    extracted = dest / "audio" / "validation" / "Clamp.wav"
    mtime = extracted.stat().st_mtime_ns
    server.requests.clear()
    download_clotho(dest, server.url, progress=False)
    assert server.file_requests() == []  # the second run downloads nothing ...
    assert extracted.stat().st_mtime_ns == mtime  # ... and extracts nothing


def test_cli_a_mirror_publishing_other_checksums_never_ends_in_verified(server, tmp_path, monkeypatch, capsys):
    checkpoint = np.random.default_rng(1).bytes(50_000)  # its md5 is not the pinned one: only the mirror's API says it
    server.add_record(3987831, {"Cnn10_mAP=0.380.pth": checkpoint})
    monkeypatch.setenv(BASE_URL_ENV, server.url)
    assert cli.main(["download", "panns-cnn10", "--dest", str(tmp_path), "--no-progress", "--allow-http"]) == 2
    captured = capsys.readouterr()
    assert "verified" not in captured.out and not list(tmp_path.iterdir())
    assert "publishes md5" in captured.err and "audiocap pins bfb1f1f9968938fa8ef4012b8471f5f6" in captured.err


def test_cli_falls_back_to_pinned_md5_without_the_api_and_base_url_option_wins(server, tmp_path, monkeypatch, capsys):
    server.add_record(3987831, {"Cnn14_mAP=0.431.pth": b"a stand-in, not the real checkpoint"}, publish=False)
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9")  # nothing listens there: the option must win
    argv = ["download", "panns-cnn14", "--dest", str(tmp_path), "--no-progress", "--base-url", server.url, "--allow-http"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "the pinned md5s are used" in err
    assert "error: " in err and "expected 541141fa2ee191a88f24a3219fff024e" in err and "Traceback" not in err


def test_cli_spice_calls_the_metrics_downloader(monkeypatch, tmp_path, capsys):
    import audiocap.cli.download as download_cli

    calls = []
    monkeypatch.setattr(download_cli, "download_spice", lambda dest, base_url: calls.append((dest, base_url)) or dest)
    monkeypatch.setenv(BASE_URL_ENV, "http://mirror.example")
    assert cli.main(["download", "spice", "--dest", str(tmp_path), "--allow-http"]) == 0
    assert calls == [(tmp_path, "http://mirror.example")]


def test_cli_refuses_a_bad_base_url_or_dest_before_any_request(server, tmp_path, monkeypatch, capsys):
    """A base URL that is no http(s) URL, or a --dest that is a file, is named with its fix up front."""
    cases = [
        (["--base-url", "notaurl", "--dest", str(tmp_path / "d")], "--base-url 'notaurl' is not an http(s) URL"),
        (["--dest", str(tmp_path / "d")], f"${BASE_URL_ENV} 'ftp://x' is not an http(s) URL"),
        (["--base-url", server.url, "--allow-http", "--dest", str(tmp_path / "file")], "file: not a folder; give a folder path"),
        (["--base-url", server.url, "--allow-http", "--dest", str(tmp_path / "file" / "sub")], "is a file); give a folder path"),
        (["--base-url", server.url, "--dest", str(tmp_path / "d")], "is plain http"),
    ]
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(BASE_URL_ENV, "ftp://x")
    for target in ["panns-cnn10", "spice"]:
        for options, message in cases:
            assert cli.main(["download", target, "--no-progress", *options]) == 2
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err
    assert server.requests == [] and not (tmp_path / "d").exists()
