"""`audiocap download fense` against a local stand-in of the Hugging Face hub and FENSE's GitHub release,
the metrics cache it fills, and `audiocap score` with FENSE's models, n-best files and missing models."""
from __future__ import annotations

import csv
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocap import cli
from audiocap.errors import MetricError
from audiocap.metrics import fense_models, score
from audiocap.metrics.fer import load_error_detector, read_checkpoint
from audiocap.metrics.sbert_sim import load_sbert
from tests.fense_stand_ins import CHECKPOINT, SBERT, build_metrics_cache
from tests.test_data_download import server  # noqa: F401  (the fixture: a local server with Range support)

ROOT = Path(__file__).resolve().parents[1]
RELEASE_PATH = "/blmoistawinde/fense/releases/download/V0.1/" + CHECKPOINT
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def stand_in_cache(tmp_path_factory, shared_data):
    rows = list(csv.DictReader(open(shared_data / "system_outputs" / "example_1.csv", encoding="utf-8")))
    return build_metrics_cache(tmp_path_factory.mktemp("stand-ins"), shared_data / "clotho" / "clotho_captions_development.csv",
                               [r["caption_predicted"].lower() for r in rows])


def git_blob_id(body: bytes) -> str:
    return hashlib.sha1(f"blob {len(body)}\0".encode() + body).hexdigest()


@pytest.fixture
def hub(server, stand_in_cache):  # noqa: F811
    """The stand-in files served as the hub and the release serve the real ones; the checkpoint's pinned
    sha256 is the real file's, which the stand-in cannot match (see the tests)."""
    server.files[RELEASE_PATH] = (stand_in_cache / CHECKPOINT).read_bytes()
    for repo, names in ((SBERT, fense_models.SBERT_FILES), ("bert-base-uncased", fense_models.TOKENIZER_FILES)):
        siblings = []
        for name in names:
            path = stand_in_cache / repo / name
            if not path.is_file():
                continue
            body = path.read_bytes()
            server.files[f"/{repo}/resolve/{COMMIT}/{name}"] = body
            sibling = {"rfilename": name, "blobId": git_blob_id(body), "size": len(body)}
            if name.endswith(".safetensors"):  # stored in LFS on the hub
                sibling["lfs"] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
            siblings.append(sibling)
        server.files[f"/api/models/{repo}/revision/main"] = json.dumps({"sha": COMMIT, "siblings": siblings}).encode()
    return server


@pytest.fixture
def stand_in_checksum(monkeypatch, stand_in_cache):
    """Pin the stand-in checkpoint's sha256 in place of the real file's."""
    url, _, base = fense_models.ECHECKERS[fense_models.DEFAULT_ECHECKER]
    sha256 = hashlib.sha256((stand_in_cache / CHECKPOINT).read_bytes()).hexdigest()
    monkeypatch.setitem(fense_models.ECHECKERS, fense_models.DEFAULT_ECHECKER, (url, sha256, base))


def download(dest: Path, hub) -> int:
    return cli.main(["download", "fense", "--dest", str(dest), "--base-url", hub.url, "--allow-http", "--no-progress"])


def test_download_fense_then_score_from_the_cache(hub, stand_in_checksum, stand_in_cache, tmp_path, shared_data, capsys):
    dest = tmp_path / "cache"
    assert download(dest, hub) == 0
    for relative in [CHECKPOINT, f"{SBERT}/model.safetensors", f"{SBERT}/1_Pooling/config.json",
                     "bert-base-uncased/vocab.txt", "bert-base-uncased/config.json"]:
        assert (dest / relative).read_bytes() == (stand_in_cache / relative).read_bytes(), relative
    assert not (dest / "bert-base-uncased" / "model.safetensors").exists()  # the checkpoint replaces its weights
    assert (dest / SBERT / "REVISION").read_text().strip() == COMMIT
    # a mirror's own checksums cannot make its hub files "verified"
    out = capsys.readouterr().out
    assert "verified" not in out and "none is pinned" in out and hub.url in out
    hub.requests.clear()
    assert download(dest, hub) == 0
    assert hub.file_requests() == []  # everything verified: nothing fetched again

    rows = list(csv.DictReader(open(shared_data / "system_outputs" / "example_1.csv", encoding="utf-8")))[:40]
    candidates = [r["caption_predicted"] for r in rows]
    references = [[r[f"caption_{k}"] for k in range(1, 6)] for r in rows]
    from_download = score(candidates, references, "fense", metrics_cache=dest)
    from_stand_ins = score(candidates, references, "fense", metrics_cache=stand_in_cache)
    assert not from_download.errors and from_download.corpus == from_stand_ins.corpus


def test_the_pinned_checkpoint_checksum_is_enforced_and_named(hub, tmp_path, capsys):
    assert download(tmp_path / "cache", hub) == 2
    err = capsys.readouterr().err
    pinned = fense_models.ECHECKERS[fense_models.DEFAULT_ECHECKER][1]
    assert f"expected {pinned}" in err and "sha256" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / CHECKPOINT).exists()


def test_a_cut_transfer_resumes_and_a_wrong_hub_file_is_named(hub, stand_in_checksum, tmp_path, capsys):
    weights = f"/{SBERT}/resolve/{COMMIT}/model.safetensors"
    hub.cut_once[weights] = 1000
    assert download(tmp_path / "a", hub) == 0
    assert [r for r in hub.requests if r[0] == weights] == [(weights, None), (weights, "bytes=1000-")]

    config = f"/bert-base-uncased/resolve/{COMMIT}/config.json"
    published = hub.files[config]
    hub.files[config] = published.replace(b"}", b" }", 1)[:-1]  # no longer the published blob, same size
    assert download(tmp_path / "b", hub) == 2
    err = capsys.readouterr().err
    assert "config.json: git-sha1" in err and "expected" in err and "Traceback" not in err

    hub.files[config] = published + b" " * 100_000  # more than the hub says the file has: cut off
    assert download(tmp_path / "c", hub) == 2
    err = capsys.readouterr().err
    assert f"more than this file can be ({len(published)}" in err and "Traceback" not in err
    assert not list((tmp_path / "c" / "bert-base-uncased").glob("config.json*"))


def test_a_missing_model_is_one_error_line_naming_the_file_and_the_command(tmp_path, shared_data):
    predictions = shared_data / "system_outputs" / "example_1.csv"
    for metrics in ["dcase2024", "sbert_sim", "spider_fl"]:
        run = subprocess.run([sys.executable, "-m", "audiocap", "score", str(predictions), "--references", str(predictions),
                              "--metrics", metrics, "--metrics-cache", str(tmp_path / "empty")],
                             capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr
        assert str(tmp_path / "empty") in lines[0] and "audiocap download fense" in lines[0]


def test_a_checkpoint_with_arbitrary_objects_is_refused_unexecuted(tmp_path, stand_in_cache):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model_type": "bert-base-uncased", "num_classes": 6, "state_dict": {"x": Payload()}}, tmp_path / "evil.ckpt")
    with pytest.raises(MetricError, match="not a FENSE error-detector checkpoint"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    torch.save({"model_type": "../../elsewhere", "num_classes": 6, "state_dict": {}}, tmp_path / "odd.ckpt")
    with pytest.raises(MetricError, match="model_type one of"):
        read_checkpoint(tmp_path / "odd.ckpt")
    assert read_checkpoint(stand_in_cache / CHECKPOINT)[:2] == ("bert-base-uncased", 6)


def test_score_cli_reads_n_best_columns_for_spider_max(tmp_path, shared_data, monkeypatch, capsys):
    """caption_predicted_1..3 as `audiocap caption --n-best 3` writes them: spider_max over the three, the
    other metrics on the first; SPICE (no jars here) is given per caption."""
    spice_of = {}

    def given_spice(candidates, references, options=None):
        per_clip = np.array([spice_of.setdefault(c, 0.05 * (len(spice_of) % 7)) for c in candidates])
        return float(per_clip.mean()), per_clip

    monkeypatch.setattr("audiocap.metrics.spice.spice", given_spice)
    rows = list(csv.DictReader(open(shared_data / "system_outputs" / "example_2.csv", encoding="utf-8")))[:60]
    predictions, references = tmp_path / "pred.csv", tmp_path / "refs.csv"
    with open(predictions, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["file_name", "caption_predicted_1", "caption_predicted_2", "caption_predicted_3"]]
                                + [[f"{i}.wav", r["caption_predicted"], r["caption_1"], r["caption_2"]] for i, r in enumerate(rows)])
    with open(references, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["file_name", "caption_1", "caption_2", "caption_3"]]
                                + [[f"{i}.wav", r["caption_3"], r["caption_4"], r["caption_5"]] for i, r in enumerate(rows)])
    argv = ["score", str(predictions), "--references", str(references), "--metrics", "cider_d,spider_max", "--json"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    refs = [[r["caption_3"], r["caption_4"], r["caption_5"]] for r in rows]
    first = score([r["caption_predicted"] for r in rows], refs, "spider").corpus
    assert printed["cider_d"] == pytest.approx(first["cider_d"])
    assert printed["spider_max"] > first["spider"]  # the human captions win on some clips
    assert {"spider_max", "cider_d_max", "spice_max"} <= set(printed)

    with open(predictions, "w", newline="", encoding="utf-8") as f:  # one caption per clip
        csv.writer(f).writerows([["file_name", "caption_predicted"]] + [[f"{i}.wav", r["caption_predicted"]] for i, r in enumerate(rows)])
    assert cli.main(["score", str(predictions), "--references", str(references), "--metrics", "spider_max"]) == 2
    assert "has one caption per clip; it needs caption_predicted_1..K" in capsys.readouterr().err


def test_loading_fense_models_from_the_cache_never_touches_the_network(stand_in_cache, monkeypatch):
    """The detector's config and tokenizer come through transformers' from_pretrained on a cache folder
    (local_files_only): with every connection refused, both models still load."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    detector, tokenizer = load_error_detector(stand_in_cache)
    assert tokenizer("a dog barks")["input_ids"] and sum(p.numel() for p in detector.parameters()) > 0
    assert load_sbert(stand_in_cache).encode(["a dog barks"]).shape[0] == 1
