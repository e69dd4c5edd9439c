"""`audiocap serve`: the HTTP API on a real uvicorn, with the bundled model and real recordings.

Captions must equal the Python API's on the same files; every bad input gets a 4xx JSON error naming the
problem and the server keeps serving; uploads never outlive their request."""
from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import audiocap
from audiocap.serve.app import create_app
from tests.live_server import LiveServer, ServeCommand

MAX_UPLOAD_BYTES = 2_300_000  # a 28.9 s Clotho wav (2.5 MB) is too large, the others fit
MAX_AUDIO_SECONDS = 20.0  # "living room clock.wav" (25.4 s) is too long


@pytest.fixture(scope="module")
def pipeline():
    return audiocap.load_model(device="cpu")


@pytest.fixture(scope="module")
def esc50(shared_data) -> list[Path]:
    return sorted((shared_data / "esc50" / "audio").glob("*.flac"))[::100][:4]


@pytest.fixture(scope="module")
def clotho(shared_data) -> Path:
    return shared_data / "clotho" / "audio" / "validation"


@pytest.fixture(scope="module")
def server(pipeline):
    app = create_app(pipeline, max_upload_bytes=MAX_UPLOAD_BYTES, max_audio_seconds=MAX_AUDIO_SECONDS)
    with LiveServer(app) as live:
        yield live


def post_file(url: str, path: Path, timeout: float = 120, **params) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(f"{url}/v1/caption", params=params, files={"file": (path.name, f)}, timeout=timeout)


def assert_no_uploads_left(app) -> None:
    assert os.listdir(app.state.upload_dir) == []


def test_captions_equal_the_python_api(server, pipeline, esc50, clotho):
    files = [*esc50, clotho / "Whistling.wav"]
    expected = pipeline.caption_results(files, beam_size=3)
    for path, result in zip(files, expected):
        answer = post_file(server.url, path)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["caption"] == result.caption
        assert body["confidence"] == pytest.approx(result.confidence, abs=1e-6)
        assert body["duration_seconds"] == pytest.approx(pipeline.load(path).size / pipeline.sample_rate, abs=1e-3)
        assert body["segments"] == [{"start": 0.0, "end": body["duration_seconds"], "caption": result.caption,
                                     "confidence": body["confidence"], "alternatives": [result.caption]}]
        assert body["model"] == "default_model.safetensors"
    raw = httpx.post(f"{server.url}/v1/caption?beam_size=1", content=esc50[0].read_bytes(),
                     headers={"content-type": "audio/flac"}, timeout=120)
    assert raw.json()["caption"] == pipeline.caption(esc50[0], beam_size=1)[0]
    assert_no_uploads_left(server.app)


def test_n_best_and_form_fields(server, pipeline, esc50):
    expected = pipeline.caption_results(esc50[1], beam_size=4, n_best=3)[0]
    with open(esc50[1], "rb") as f:
        answer = httpx.post(f"{server.url}/v1/caption", data={"beam_size": "4", "n_best": "3"},
                            files={"file": (esc50[1].name, f)}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["alternatives"] == expected.alternatives and len(set(expected.alternatives)) == 3


def test_segments_of_a_long_recording(server, pipeline, clotho):
    path = clotho / "Whistling.wav"  # 16.2 s: windows 0-5, 5-10, 10-16.2 (the last 1.2 s joins the one before)
    body = post_file(server.url, path, segment=5).json()
    expected = pipeline.caption_segment_results(path, segment_seconds=5)[0]
    assert [(s["start"], s["end"], s["caption"]) for s in body["segments"]] == \
        [(round(r.start, 3), round(r.end, 3), r.caption) for r in expected]
    assert [s["confidence"] for s in body["segments"]] == pytest.approx([r.confidence for r in expected], abs=1e-6)
    assert body["caption"] == pipeline.caption(path)[0]  # the whole recording fits the model: captioned too


def test_recorded_webm_opus_is_decoded_by_ffmpeg(server, pipeline, esc50, tmp_path):
    """What a browser's MediaRecorder sends: webm with opus at 48 kHz."""
    import av
    import numpy as np
    import soundfile as sf

    audio, rate = sf.read(esc50[2], dtype="float32")
    webm = tmp_path / "recording.webm"
    with av.open(str(webm), "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode(None))
    answer = httpx.post(f"{server.url}/v1/caption", content=webm.read_bytes(),
                        headers={"content-type": "audio/webm;codecs=opus"}, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["caption"] == pipeline.caption(webm)[0] and body["duration_seconds"] == pytest.approx(5.0, abs=0.05)
    assert np.isfinite(body["confidence"])


def test_concurrent_requests_share_batches(server, pipeline, esc50):
    before = httpx.get(f"{server.url}/v1/health").json()
    files = esc50 * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda path: post_file(server.url, path), files))
    assert [a.json()["caption"] for a in answers] == pipeline.caption(files)
    after = httpx.get(f"{server.url}/v1/health").json()
    assert after["clips_captioned"] - before["clips_captioned"] == 8
    assert after["batches"] - before["batches"] < 8  # requests that arrived together were captioned together


def bad_requests(url: str, esc50: list[Path], clotho: Path, tmp_path: Path) -> list[tuple[str, dict, int, str]]:
    """(what, httpx.post keyword arguments, expected status, a word the error must contain)."""
    good = esc50[0].read_bytes()
    truncated = good[:2000]
    caption = f"{url}/v1/caption"
    return [
        ("not audio", dict(files={"file": ("notes.wav", b"these are my notes, not a recording\n" * 50)}), 422,
         "cannot decode audio"),
        ("corrupt", dict(files={"file": ("cut.flac", truncated)}), 422, "'cut.flac'"),
        ("empty", dict(files={"file": ("empty.wav", b"")}), 422, "empty"),
        ("empty body", dict(content=b""), 422, "empty"),
        ("too long", dict(files={"file": ("clock.wav", (clotho / "living room clock.wav").read_bytes())}), 422,
         "longer than 20 s"),
        ("too large", dict(files={"file": ("drezyna.wav", (clotho / "140815_drezyna_3.wav").read_bytes())}), 413,
         "larger than"),
        ("too large raw", dict(content=(clotho / "140815_drezyna_3.wav").read_bytes()), 413, "larger than"),
        ("wrong field", dict(files={"audio": ("a.flac", good)}), 422, "unknown form field 'audio'"),
        ("field twice", dict(data={"beam_size": "2"}, files={"beam_size": (None, "2")}), 422, "beam_size given twice"),
        ("form without file", dict(files={"beam_size": (None, "2")}), 422, "no `file` field"),
        ("two files", dict(files=[("file", ("a.flac", good)), ("file", ("b.flac", good))]), 422, "two `file`"),
        ("unknown parameter", dict(params={"beam": "3"}, files={"file": ("a.flac", good)}), 422, "'beam'"),
        ("beam not a number", dict(params={"beam_size": "three"}, files={"file": ("a.flac", good)}), 422, "beam_size"),
        ("beam too large", dict(params={"beam_size": "1000"}, files={"file": ("a.flac", good)}), 422, "from 1 to 10"),
        ("n_best above beam", dict(params={"beam_size": "2", "n_best": "3"}, files={"file": ("a.flac", good)}),
         422, "n_best"),
        ("segment too short", dict(params={"segment": "0.01"}, files={"file": ("a.flac", good)}), 422, "segment"),
        ("segment nan", dict(params={"segment": "nan"}, files={"file": ("a.flac", good)}), 422, "segment"),
        ("twice", dict(params={"n_best": "1"}, data={"n_best": "1"}, files={"file": ("a.flac", good)}), 422, "once"),
        ("path as a name", dict(files={"file": ("../../etc/passwd", b"root:x:0:0")}), 422, "'passwd'"),
        ("not multipart", dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 422,
         "boundary"),
    ]


def test_each_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(server, pipeline, esc50, clotho, tmp_path):
    for what, request, status, word in bad_requests(server.url, esc50, clotho, tmp_path):
        answer = httpx.post(f"{server.url}/v1/caption", timeout=60, **request)
        assert answer.status_code == status, (what, answer.text)
        assert word in answer.json()["error"], (what, answer.json())
        assert "/tmp" not in answer.json()["error"] and ".upload" not in answer.json()["error"], what
    for method, path, status in [("GET", "/v1/caption", 405), ("GET", "/v1/nothing", 404), ("GET", "/etc/passwd", 404),
                                 ("GET", "/static/../app.py", 404)]:
        answer = httpx.request(method, server.url + path)
        assert answer.status_code == status and "error" in answer.json(), (path, answer.text)
    assert post_file(server.url, esc50[0]).json()["caption"] == pipeline.caption(esc50[0])[0]
    assert_no_uploads_left(server.app)


def test_api_key(pipeline, esc50):
    with LiveServer(create_app(pipeline, api_key="s3cret key")) as live:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer s3cret"}):
            answer = httpx.get(f"{live.url}/v1/health", headers=headers)
            assert answer.status_code == 401 and "API key" in answer.json()["error"]
        with open(esc50[0], "rb") as f:
            refused = httpx.post(f"{live.url}/v1/caption", files={"file": f})
        assert refused.status_code == 401
        assert httpx.get(f"{live.url}/v1/model", headers={"X-API-Key": "s3cret key"}).status_code == 200
        assert httpx.get(f"{live.url}/v1/health", headers={"Authorization": "Bearer s3cret key"}).status_code == 200
        with open(esc50[0], "rb") as f:
            answer = httpx.post(f"{live.url}/v1/caption", files={"file": f}, headers={"X-API-Key": "s3cret key"},
                                timeout=120)
        assert answer.json()["caption"] == pipeline.caption(esc50[0])[0]
        assert httpx.get(f"{live.url}/").status_code == 200  # the page itself is open; it asks for the key


def test_a_full_queue_answers_503_with_retry_after(pipeline, clotho):
    path = clotho / "Whistling.wav"
    with LiveServer(create_app(pipeline, max_pending=1)) as live:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post_file(live.url, path), range(4)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 200 and statuses[-1] == 503, statuses
        busy = next(a for a in answers if a.status_code == 503)
        assert int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["error"]
        assert post_file(live.url, path).json()["caption"] == pipeline.caption(path)[0]
        assert_no_uploads_left(live.app)


def test_the_time_limit_answers_504_and_deletes_the_upload(pipeline, clotho):
    # 10 ms cannot hold reading a 16 s upload, encoding it and a wide beam search, however fast the machine
    with LiveServer(create_app(pipeline, request_timeout=0.01)) as live:
        answer = post_file(live.url, clotho / "Whistling.wav", beam_size=8)
        assert answer.status_code == 504 and "time limit (0.01 s)" in answer.json()["error"]
        assert_no_uploads_left(live.app)
        time.sleep(1)
        assert httpx.get(f"{live.url}/v1/health").json()["pending"] == 0


def test_model_description_and_docs(server, pipeline):
    model = httpx.get(f"{server.url}/v1/model").json()
    assert model["name"] == "default_model.safetensors" and model["bundled"] and len(model["version"]) == 12
    assert model["sample_rate"] == pipeline.sample_rate == 44100
    card = " ".join((Path(audiocap.__file__).parent / "assets" / "MODEL_CARD.md").read_text().split())
    assert "What it is" in model["model_card"]  # what the model knows, from its card, section by section
    assert "What it knows" in model["model_card"] and "What it does not know" in model["model_card"]
    assert all(part and part in card for text in model["model_card"].values() for part in text.split("\n\n"))
    assert model["limits"]["max_audio_seconds"] == MAX_AUDIO_SECONDS
    assert httpx.get(f"{server.url}/docs").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/caption", "/v1/health", "/v1/model"} <= set(spec["paths"])
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{server.url}/static/app.js").status_code == 200


def test_serve_command_binds_localhost_and_reads_the_key_from_the_environment():
    with ServeCommand(env={**os.environ, "AUDIOCAP_API_KEY": "from-env"}) as server:
        answer = httpx.get(f"{server.url}/v1/health", headers={"X-API-Key": "from-env"})
        assert answer.status_code == 200 and httpx.get(f"{server.url}/v1/health").status_code == 401
        assert listening_addresses(server.port) == ["127.0.0.1"]


def listening_addresses(port: int) -> list[str]:
    """The addresses with a socket listening on `port`, from the kernel's tables (IPv6 ones in hex)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if int(port_hex, 16) == port and state == "0A":  # 0A: LISTEN
                    addresses.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return addresses


def test_serve_command_refuses_bad_limits(capsys):
    from audiocap.cli import main

    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-upload-mb must be above 0")


def test_bad_json_never_escapes_as_html(server):
    """Even an error FastAPI raises itself is JSON."""
    answer = httpx.post(f"{server.url}/v1/model")
    assert answer.status_code == 405 and json.loads(answer.text)["error"]


def test_an_upload_cut_off_midway_leaves_no_file(server, pipeline, esc50):
    audio = esc50[0].read_bytes()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: test\r\nContent-Type: audio/flac\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(audio) + audio[:len(audio) // 2])
        time.sleep(0.5)  # the server has started receiving the upload
    deadline = time.monotonic() + 10
    while os.listdir(server.app.state.upload_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_no_uploads_left(server.app)
    assert post_file(server.url, esc50[0]).json()["caption"] == pipeline.caption(esc50[0])[0]
