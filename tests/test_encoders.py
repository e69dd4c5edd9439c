"""Encoders: the official PANNs checkpoint layout, the real aisfx weights, the shared interface."""
from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from audiocap.audio import load_audio
from audiocap.encoders import AudioEncoder, create_encoder, list_encoders
from audiocap.encoders.aisfx import AISFX_MEL, LOG_SPECTROGRAM_MAX, aisfx_spectrogram, installed_checkpoint
from audiocap.encoders import encoder_from_config
from audiocap.encoders.panns import CNN10_CHANNELS, CNN14_CHANNELS, audioset_labels
from audiocap.errors import CheckpointError, ConfigError

TINY = [4, 8, 8, 8, 8, 16]  # six blocks, like CNN14, for cheap forwards


def official_panns_state_dict(channels, classes: int = 527, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the key layout, shapes and front-end tensors of audioset_tagging_cnn's
    `Cnn10`/`Cnn14` (torchlibrosa Spectrogram + LogmelFilterBank), built independently of our code."""
    g = torch.Generator().manual_seed(seed)
    n_fft = 1024
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # librosa's get_window("hann", fftbins=True)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft), np.arange(n_fft)) / n_fft)[:, : n_fft // 2 + 1]
    sd = {
        "spectrogram_extractor.stft.conv_real.weight": torch.Tensor(np.real(dft * window[:, None]).T)[:, None, :],
        "spectrogram_extractor.stft.conv_imag.weight": torch.Tensor(np.imag(dft * window[:, None]).T)[:, None, :],
        "logmel_extractor.melW": torch.Tensor(librosa.filters.mel(sr=32000, n_fft=n_fft, n_mels=64, fmin=50, fmax=14000).T),
    }

    def batch_norm(prefix, n):
        sd.update({f"{prefix}.weight": 1 + 0.1 * torch.randn(n, generator=g), f"{prefix}.bias": 0.1 * torch.randn(n, generator=g),
                   f"{prefix}.running_mean": torch.randn(n, generator=g), f"{prefix}.running_var": 1 + torch.rand(n, generator=g),
                   f"{prefix}.num_batches_tracked": torch.tensor(1000)})

    batch_norm("bn0", 64)
    for i, (c_in, c_out) in enumerate(zip([1] + list(channels), channels), start=1):
        sd[f"conv_block{i}.conv1.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5
        sd[f"conv_block{i}.conv2.weight"] = torch.randn(c_out, c_out, 3, 3, generator=g) * (2 / (9 * c_out)) ** 0.5
        batch_norm(f"conv_block{i}.bn1", c_out)
        batch_norm(f"conv_block{i}.bn2", c_out)
    d = channels[-1]
    sd.update({"fc1.weight": torch.randn(d, d, generator=g) / d ** 0.5, "fc1.bias": torch.zeros(d),
               "fc_audioset.weight": torch.randn(classes, d, generator=g) / d ** 0.5, "fc_audioset.bias": torch.zeros(classes)})
    return sd


def save_official_checkpoint(path, state_dict) -> None:
    """As audioset_tagging_cnn's main.py saves it; 'sampler' is BalancedTrainSampler.state_dict()."""
    sampler = {"indexes_per_class": [np.arange(k, 50, 7, dtype=np.int64) for k in range(5)],
               "queue": [3, 1, 4], "pointers_of_classes": [0, 2, 1, 0, 5]}
    torch.save({"iteration": 600000, "model": state_dict, "sampler": sampler}, path)


@pytest.mark.parametrize("name, channels, rate", [("panns-cnn10", CNN10_CHANNELS, 6.25), ("panns-cnn14", CNN14_CHANNELS, 3.125)])
def test_official_layout_loads_strictly_and_gives_documented_frames(tmp_path, name, channels, rate):
    path = tmp_path / f"{name}.pth"
    official = official_panns_state_dict(channels)
    save_official_checkpoint(path, official)
    encoder = create_encoder(name, checkpoint=str(path)).eval()
    ours = encoder.state_dict()
    assert ours.keys() == official.keys()
    assert all(torch.equal(ours[k], official[k]) for k in official)
    assert (encoder.dim, encoder.frame_rate, encoder.sample_rate) == (channels[-1], rate, 32000)

    with torch.no_grad():
        frames, lengths = encoder(torch.randn(2, 32000) * 0.1, torch.tensor([32000, 20000]))
        tags = encoder.tag(frames, lengths)
    pools = len(channels) if name == "panns-cnn10" else len(channels) - 1
    assert frames.shape == (2, 101 // 2 ** pools, channels[-1]) and torch.isfinite(frames).all()
    assert lengths.tolist() == [101 // 2 ** pools, 63 // 2 ** pools]
    assert tags.shape == (2, 527) and ((tags >= 0) & (tags <= 1)).all()


def test_official_forward_matches_a_reference_written_like_the_release(tmp_path):
    """Same numbers as the official Cnn14.forward (conv-based STFT, then the layer sequence)."""
    path = tmp_path / "tiny.pth"
    sd = official_panns_state_dict(TINY)
    save_official_checkpoint(path, sd)
    encoder = create_encoder("panns-cnn14", checkpoint=str(path), channels=TINY).eval()
    waveform = torch.randn(1, 48000) * 0.1
    F = torch.nn.functional
    x = F.pad(waveform[:, None], (512, 512), mode="reflect")
    real = F.conv1d(x, sd["spectrogram_extractor.stft.conv_real.weight"], stride=320)
    imag = F.conv1d(x, sd["spectrogram_extractor.stft.conv_imag.weight"], stride=320)
    x = (real ** 2 + imag ** 2).transpose(1, 2)[:, None] @ sd["logmel_extractor.melW"]  # (1, 1, T, 64)
    x = 10 * torch.log10(x.clamp(min=1e-10))

    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])

    x = bn(x.transpose(1, 3), "bn0").transpose(1, 3)
    for i in range(1, 7):
        for j in (1, 2):
            x = F.relu(bn(F.conv2d(x, sd[f"conv_block{i}.conv{j}.weight"], padding=1), f"conv_block{i}.bn{j}"))
        x = F.avg_pool2d(x, 2) if i < 6 else x
    x = x.mean(dim=3)  # (1, C, T')
    clip = F.relu(F.linear(x.amax(dim=2) + x.mean(dim=2), sd["fc1.weight"], sd["fc1.bias"]))
    clipwise = torch.sigmoid(F.linear(clip, sd["fc_audioset.weight"], sd["fc_audioset.bias"]))
    with torch.no_grad():
        frames, lengths = encoder(waveform, torch.tensor([48000]))
        torch.testing.assert_close(frames, x.transpose(1, 2), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(encoder.tag(frames, lengths), clipwise, atol=1e-5, rtol=1e-4)


class Arbitrary:
    """Stands for any pickled object outside the allow-list."""


def test_bad_checkpoints_raise_checkpoint_errors(tmp_path):
    sd = official_panns_state_dict(TINY)
    missing = dict(sd)
    del missing["fc1.bias"]
    save_official_checkpoint(tmp_path / "missing.pth", missing)
    with pytest.raises(CheckpointError, match=r"missing.pth: does not match .*missing: fc1.bias"):
        create_encoder("panns-cnn14", checkpoint=str(tmp_path / "missing.pth"), channels=TINY)

    wrong_stft = dict(sd, **{"spectrogram_extractor.stft.conv_real.weight": torch.zeros(513, 1, 1024)})
    save_official_checkpoint(tmp_path / "stft.pth", wrong_stft)
    with pytest.raises(CheckpointError, match="not a 1024-point Hann DFT"):
        create_encoder("panns-cnn14", checkpoint=str(tmp_path / "stft.pth"), channels=TINY)

    torch.save({"model": sd, "sampler": Arbitrary()}, tmp_path / "unsafe.pth")  # could run code when unpickled
    with pytest.raises(CheckpointError, match="unsafe.pth: refusing to unpickle"):
        create_encoder("panns-cnn14", checkpoint=str(tmp_path / "unsafe.pth"), channels=TINY)

    save_official_checkpoint(tmp_path / "full.pth", sd)
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth: cannot read it .*truncated"):
        create_encoder("panns-cnn14", checkpoint=str(tmp_path / "cut.pth"), channels=TINY)

    with pytest.raises(CheckpointError, match="Cnn14_mAP=0.431.pth"):
        create_encoder("panns-cnn14")
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint"):
        create_encoder("panns-cnn10", checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="unknown encoder"):
        create_encoder("wav2vec")


def test_aisfx_loads_its_real_weights_and_matches_the_original_network(clotho_clips):
    from aisfx.models.cnn2d import EmbeddingNet  # the reference implementation (test only)

    from audiocap.encoders.checkpoint import NUMPY_INT64_SCALARS, load_checkpoint

    encoder = create_encoder("aisfx").eval()
    state_dict, heads = load_checkpoint(installed_checkpoint(), NUMPY_INT64_SCALARS, "")
    assert len(heads) == 9
    reference = EmbeddingNet("max", 3, 1, 64).eval()
    reference.load_state_dict({k.removeprefix("embedding_net."): v for k, v in state_dict.items() if k.startswith("embedding_net.")})

    waveform = torch.from_numpy(load_audio(clotho_clips[0], sample_rate=44100))[None, : 44100 * 5]
    with torch.no_grad():
        frames, lengths = encoder(waveform, torch.tensor([waveform.shape[1]]))
        spectrogram = aisfx_spectrogram(waveform, encoder.mel_filters)[0]  # (216, 96)
        blocks = torch.stack([torch.nn.functional.pad(spectrogram[s: s + 100], (0, 0, 0, max(0, s + 100 - len(spectrogram))))
                              for s in range(0, 200, 50)])
        expected = reference(blocks)
    assert frames.shape == (1, 4, 512) and lengths.tolist() == [4] and torch.isfinite(frames).all()
    torch.testing.assert_close(frames[0], expected, atol=1e-5, rtol=1e-4)
    assert frames.abs().sum() > 0


def test_aisfx_front_end_equals_librosa_with_its_settings(clotho_clips):
    import scipy.signal

    waveform = load_audio(clotho_clips[1], sample_rate=44100)[: 44100 * 10].astype(np.float64)
    s = AISFX_MEL
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, n_mels=s.n_mels, fmin=s.f_min,
        fmax=s.f_max, htk=True, norm=1.0, power=2.0, center=True, pad_mode="constant",
        window=scipy.signal.get_window("hann", s.n_fft, fftbins=False))
    reference = np.log10(1e4 * mel + 1).T / LOG_SPECTROGRAM_MAX
    filters = create_encoder("aisfx", pretrained=False).mel_filters.double()
    ours = aisfx_spectrogram(torch.from_numpy(waveform), filters).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_missing_aisfx_names_the_fix(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps aisfx"):
        create_encoder("aisfx")


TINY_ENCODERS = [("panns-cnn10", {"channels": [4, 4, 8, 8]}), ("panns-cnn14", {"channels": TINY}),
                 ("scratch-cnn10", {"channels": [4, 4, 8, 8]}), ("aisfx", {"channels": [4, 4, 8, 8], "block_hop": 25})]


@pytest.mark.parametrize("name, options", TINY_ENCODERS)
def test_interface(name, options):
    assert name in list_encoders()
    encoder = create_encoder(name, pretrained=False, **options)
    assert isinstance(encoder, AudioEncoder) and encoder.dim == options["channels"][-1]
    sr = encoder.sample_rate
    lengths = torch.tensor([sr * 4, sr * 2 + 123, 0])
    waveforms = torch.randn(3, sr * 4) * 0.1 * (torch.arange(sr * 4) < lengths[:, None])
    encoder.eval()
    with torch.no_grad():
        frames, frame_lengths = encoder(waveforms, lengths)
    assert frames.shape == (3, frame_lengths.max(), encoder.dim) and torch.isfinite(frames).all()
    assert frame_lengths.dtype == torch.long and frame_lengths[2] == 1  # empty audio: one frame of silence
    warm_up = options.get("block_frames", 100) / options["block_hop"] - 1 if name == "aisfx" else 0  # first block
    assert frame_lengths[0] == pytest.approx(4 * encoder.frame_rate - warm_up, abs=1.01)

    encoder.freeze().train()
    assert encoder.frozen and not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    encoder.unfreeze().train()
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())

    config = json.loads(json.dumps(encoder.config()))
    rebuilt = encoder_from_config(config, encoder.state_dict()).eval()
    assert rebuilt.weights_hash() == encoder.weights_hash()
    with torch.no_grad():
        next(iter(rebuilt.parameters())).add_(1.0)
    assert rebuilt.weights_hash() != encoder.weights_hash()
    with pytest.raises(ConfigError, match="incompatible"):
        encoder_from_config(dict(config, dim=9))


def test_gradients_flow_when_unfrozen():
    encoder = create_encoder("scratch-cnn10", channels=[4, 4, 8, 8]).train()
    frames, _ = encoder(torch.randn(2, 32000), torch.tensor([32000, 32000]))
    frames.sum().backward()
    assert encoder.conv_block1.conv1.weight.grad is not None


def test_labels_are_bundled():
    labels = audioset_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and labels[137] == "Music"


class CountingEncoder(AudioEncoder):
    """Records the size of every forward pass; one frame = mean of 1600 samples."""

    name, sample_rate, frame_rate, dim = "counting", 16000, 10.0, 1

    def __init__(self):
        super().__init__()
        self.calls: list[int] = []

    def forward(self, waveforms, lengths):
        self.calls.append(waveforms.shape[1])
        n = max(1, waveforms.shape[1] // 1600)
        frames = torch.nn.functional.pad(waveforms, (0, n * 1600 - waveforms.shape[1]))[:, : n * 1600]
        return frames.view(len(waveforms), n, 1600).mean(-1, keepdim=True), self.frame_lengths(lengths)


def test_one_hour_file_is_encoded_in_bounded_chunks(tmp_path):
    from tests.test_audio import write_long_silence

    path = tmp_path / "hour.wav"
    write_long_silence(path, 3600, 8000)
    encoder = CountingEncoder()
    frames = encoder.encode_file(path, chunk_seconds=60)
    assert frames.shape == (36000, 1)
    assert max(encoder.calls) == 60 * 16000 and len(encoder.calls) == 60


def test_encode_file_equals_forward_for_clips(tmp_path):
    encoder = create_encoder("panns-cnn10", pretrained=False, channels=[4, 4, 8, 8]).eval()
    path = tmp_path / "clip.wav"
    sf.write(path, np.random.default_rng(1).uniform(-0.3, 0.3, 32000 * 3), 32000)
    waveform = torch.from_numpy(load_audio(path))[None]
    with torch.no_grad():
        frames, lengths = encoder(waveform, torch.tensor([waveform.shape[1]]))
    np.testing.assert_allclose(encoder.encode_file(path), frames[0, : lengths[0]].numpy(), atol=1e-6)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 32000)
    empty = encoder.encode_file(tmp_path / "empty.wav")
    assert empty.shape == (1, 8) and np.isfinite(empty).all()


@pytest.mark.parametrize("name", ["aisfx", "scratch-cnn10"])
def test_encode_clips_gives_each_clip_its_frames_alone(name, tmp_path):
    """Zero-padding a short clip next to a long one changes its last frames; encode_clips must not."""
    encoder = create_encoder(name).freeze()
    rate = encoder.sample_rate
    torch.manual_seed(0)
    clips = [torch.randn(4 * rate).numpy() * 0.1, torch.randn(12 * rate).numpy() * 0.1,
             torch.randn(4 * rate).numpy() * 0.1, torch.randn(3 * rate).numpy() * 0.1]
    frames = encoder.encode_clips(clips, chunk_seconds=10)  # the 12 s clip: in two chunks
    for clip, got in zip(clips, frames):
        sf.write(tmp_path / "clip.wav", clip, rate, subtype="FLOAT")
        np.testing.assert_allclose(got.numpy(), encoder.encode_file(tmp_path / "clip.wav", chunk_seconds=10), atol=1e-5)
    with torch.inference_mode():  # what a padded batch would have given the 4 s clip: not its frames
        padded, lengths = encoder(torch.from_numpy(np.stack([np.pad(clips[0], (0, 8 * rate)), clips[1]])),
                                  torch.tensor([4 * rate, 12 * rate]))
    assert not np.allclose(padded[0, : lengths[0]].numpy(), frames[0].numpy(), atol=1e-3)
