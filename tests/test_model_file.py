import pytest
import torch

from audiocap.encoders import create_encoder
from audiocap.errors import CheckpointError
from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.model_file import FORMAT_VERSION, load_model_file, read_model_info, save_model
from audiocap.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    encoder = create_encoder("scratch-cnn10", channels=(4, 8)).eval()  # a real encoder class, tiny
    tokenizer = Tokenizer.build(["a dog barks", "rain falls on a roof"])
    dims = ModelDimensions(n_audio_features=encoder.dim, n_vocab=tokenizer.n_vocab, d_model=16, n_heads=2,
                           d_ff=32, max_caption_tokens=12, rlssr_hidden=8)
    return AudioCaptioner(dims).eval(), tokenizer, encoder


@pytest.fixture(scope="module")
def model_path(parts, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, *parts, training_info={"epoch": 3, "spider": 0.1})


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_everything(parts, model_path):
    captioner, tokenizer, encoder = parts
    loaded = load_model_file(model_path)
    assert loaded.captioner.dims == captioner.dims
    assert state_equal(loaded.captioner, captioner)
    assert state_equal(loaded.encoder, encoder)
    assert loaded.encoder.config() == encoder.config()
    assert loaded.tokenizer.itos == tokenizer.itos
    assert not loaded.captioner.training and not loaded.encoder.training

    waveforms, lengths = torch.randn(1, 32000), torch.tensor([32000])
    with torch.no_grad():
        frames, frame_lengths = loaded.encoder(waveforms, lengths)
        expected = encoder(waveforms, lengths)[0]
    torch.testing.assert_close(frames, expected)
    assert loaded.captioner.encode(frames, frame_lengths)[0].shape[-1] == 16


def test_metadata_is_readable_without_weights(model_path, parts):
    info = read_model_info(model_path)
    assert info["format_version"] == FORMAT_VERSION
    assert info["dimensions"]["d_model"] == 16
    assert info["encoder"]["name"] == "scratch-cnn10"
    assert info["training"] == {"epoch": 3, "spider": 0.1}


def test_half_precision_storage(parts, tmp_path, model_path):
    half_path = save_model(tmp_path / "half.safetensors", *parts, half=True)
    assert half_path.stat().st_size < 0.6 * model_path.stat().st_size
    loaded = load_model_file(half_path)
    weight = loaded.captioner.decoder.token_embedding.weight
    assert weight.dtype == torch.float32  # fp16 on disk, fp32 in memory
    torch.testing.assert_close(weight, parts[0].decoder.token_embedding.weight, atol=1e-3, rtol=1e-3)


def test_truncated_file_is_reported(model_path, tmp_path):
    data = model_path.read_bytes()
    for cut, message in ((len(data) - 100, "truncated"), (40, "truncated")):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=message) as error:
            load_model_file(path)
        assert str(path) in str(error.value)


def test_unknown_format_version_is_reported(model_path, tmp_path):
    data = model_path.read_bytes()
    current = f'"format_version":"{FORMAT_VERSION}"'.encode()
    assert data.count(current) == 1
    path = tmp_path / "future.safetensors"
    path.write_bytes(data.replace(current, b'"format_version":"9"'))  # same length: offsets stay valid
    with pytest.raises(CheckpointError, match="format version 9 is not supported"):
        load_model_file(path)


def test_other_files_are_not_models(tmp_path):
    wav = tmp_path / "clip.wav"
    wav.write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(100))
    with pytest.raises(CheckpointError, match="not a safetensors model file"):
        load_model_file(wav)
    from safetensors.torch import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an audiocap model file"):
        load_model_file(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_model_file(tmp_path / "missing.safetensors")


def test_save_rejects_mismatched_parts(parts, tmp_path):
    captioner, _, encoder = parts
    with pytest.raises(ValueError, match="n_vocab"):
        save_model(tmp_path / "bad.safetensors", captioner, Tokenizer(["only"]), encoder)
