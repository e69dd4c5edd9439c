"""Hostile model files: every one is a one-line CheckpointError, found before anything large is allocated,
and no metadata makes loading open another file."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch

from audiocap.encoders import create_encoder
from audiocap.errors import CheckpointError
from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.model_file import load_model_file, save_model
from audiocap.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    encoder = create_encoder("scratch-cnn10", channels=(4, 8)).eval()
    tokenizer = Tokenizer.build(["a dog barks", "rain falls on a roof"])
    dims = ModelDimensions(n_audio_features=encoder.dim, n_vocab=tokenizer.n_vocab, d_model=16, n_heads=2,
                           d_ff=32, max_caption_tokens=12, rlssr_hidden=8)
    return save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", AudioCaptioner(dims), tokenizer, encoder)


def split(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write(path, header, body: bytes = b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def with_metadata(tiny_model, tmp_path, name, **changes):
    header, body = split(tiny_model)
    for key, change in changes.items():
        header["__metadata__"][key] = json.dumps(change(json.loads(header["__metadata__"][key])))
    return write(tmp_path / name, header, body)


def one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as error:
        load_model_file(path)
    message = str(error.value)
    assert "\n" not in message and len(message) < 600 and str(path) in message
    return message


@pytest.mark.parametrize("header", [
    [1, 2, 3], {"__metadata__": [1]}, {"__metadata__": {"format": 1}}, {"w": 5}, {"w": {"dtype": "F32"}},
    {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8]}}, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
    {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, {"w": {"dtype": "F32", "shape": "big", "data_offsets": [0, 4]}},
])
def test_malformed_headers_are_one_line_errors(tmp_path, header):
    assert "safetensors" in one_line_error(write(tmp_path / "bad.safetensors", header, b"\0" * 16))


def test_absurd_sizes_in_metadata_fail_before_allocating(tiny_model, tmp_path):
    # each of these took gigabytes (or forever) before the sizes were checked against the header's shapes
    for name, change in [("layers", lambda d: {**d, "n_decoder_layers": 1500}), ("huge", lambda d: {**d, "d_ff": 10**6}),
                         ("frames", lambda d: {**d, "max_audio_frames": 10**9}), ("neg", lambda d: {**d, "d_model": -4}),
                         ("type", lambda d: {**d, "n_heads": "4"}), ("extra", lambda d: {**d, "x": 1})]:
        path = with_metadata(tiny_model, tmp_path, f"{name}.safetensors", dimensions=change)
        assert path.stat().st_size < 10_000_000
        assert "dimensions" in one_line_error(path)
    path = with_metadata(tiny_model, tmp_path, "layers3.safetensors", dimensions=lambda d: {**d, "n_decoder_layers": 3})
    assert "weights do not match its metadata (missing captioner.decoder.blocks.2" in one_line_error(path)


def test_a_15_kb_file_claiming_1500_layers_stays_small(tiny_model, tmp_path):
    path = with_metadata(tiny_model, tmp_path, "big.safetensors", dimensions=lambda d: {**d, "n_decoder_layers": 1500})
    # VmHWM: this process's peak (ru_maxrss would include the forking pytest process's)
    code = ("import re, sys\nfrom audiocap.model_file import load_model_file\nfrom audiocap.errors import "
            "CheckpointError\ntry:\n    load_model_file(sys.argv[1])\nexcept CheckpointError as e:\n    print(e)\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120).stdout
    message, peak_kb = out.strip().splitlines()
    assert "n_decoder_layers=1500" in message and int(peak_kb) < 1_000_000  # < 1 GB (it was 6.5 GB)


def test_metadata_cannot_make_loading_open_another_file(tiny_model, tmp_path):
    victim = tmp_path / "victim.pth"
    torch.save({"x": torch.zeros(1)}, victim)
    for options in ({"checkpoint": str(victim)}, {"pretrained": True}):
        path = with_metadata(tiny_model, tmp_path, "evil.safetensors",
                             encoder=lambda e: {**e, "options": {**e["options"], **options}})
        assert "never a checkpoint" in one_line_error(path)


def test_tag_checkpoint_of_the_wrong_kind_is_one_error_line(tiny_model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    for checkpoint in (tiny_model, text):
        run = subprocess.run([sys.executable, "-m", "audiocap", "tag", str(tiny_model), "--checkpoint", str(checkpoint),
                              "--encoder", "panns-cnn10"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert run.stderr.startswith(f"error: {checkpoint}: ") and len(run.stderr.splitlines()) == 1
