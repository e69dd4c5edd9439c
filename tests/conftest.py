"""Fixtures shared by several test files. Real data lives in ../shared/data (see its README); the package
never reads it."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUDIOCAP_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
CLOTHO_VALIDATION_AUDIO = SHARED_DATA / "clotho" / "audio" / "validation"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():  # fail loudly: a skipped test proves nothing
        raise FileNotFoundError(f"shared test data not found at {SHARED_DATA}; set AUDIOCAP_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def clotho_clips(shared_data) -> list[Path]:
    return sorted(CLOTHO_VALIDATION_AUDIO.glob("*.wav"))


# ---- untrained captioning models (plumbing, not caption quality) and short real audio: test_caption.py,
# test_evaluate.py


def tiny_model_file(path: Path, shared_data: Path, **dims) -> Path:
    import torch

    from audiocap.encoders import create_encoder
    from audiocap.model import AudioCaptioner, ModelDimensions
    from audiocap.model_file import save_model
    from audiocap.tokenizer import Tokenizer

    torch.manual_seed(0)
    with open(shared_data / "clotho" / "clotho_captions_validation.csv", newline="", encoding="utf-8") as f:
        tokenizer = Tokenizer.build([c for row in list(csv.reader(f))[1:50] for c in row[1:]])
    encoder = create_encoder("aisfx").freeze()
    dims = ModelDimensions(n_audio_features=encoder.dim, n_vocab=tokenizer.n_vocab, d_model=32, n_heads=2,
                           n_encoder_layers=1, n_decoder_layers=1, d_ff=64, max_caption_tokens=12, **dims)
    save_model(path, AudioCaptioner(dims).eval(), tokenizer, encoder)
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, shared_data) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", shared_data)


@pytest.fixture(scope="session")
def short_model_path(tmp_path_factory, shared_data) -> Path:
    """A model that attends to 8 aisfx frames at most: 9.3 s of audio."""
    return tiny_model_file(tmp_path_factory.mktemp("model") / "short.safetensors", shared_data, max_audio_frames=8)


@pytest.fixture(scope="session")
def long_file(tmp_path_factory, clotho_clips) -> Path:
    """12 s of real audio at 44.1 kHz: too long for short_model_path."""
    audio, rate = sf.read(clotho_clips[3], frames=12 * 44100, dtype="float32")
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, audio, rate)
    return path


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory, clotho_clips) -> Path:
    """Three 4 s excerpts of real clips, as 44.1 kHz wav and flac."""
    folder = tmp_path_factory.mktemp("audio")
    for clip, suffix in zip(clotho_clips[:3], (".wav", ".flac", ".wav")):
        audio, rate = sf.read(clip, frames=4 * 44100, dtype="float32")
        sf.write(folder / (clip.stem + suffix), audio, rate)
    return folder


# ---- a tiny captioner and its frames (test_decoding.py, test_quantize.py)

WORDS = "a dog barks loudly while birds sing in the background and rain falls on roof".split()
TOKENIZER = Tokenizer(WORDS)  # ids 4.. in WORDS order


@pytest.fixture(scope="module")
def one_thread():
    """These tensors are tiny: a second thread only adds synchronisation (10x slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed=0, **overrides) -> AudioCaptioner:
    torch.manual_seed(seed)
    settings = dict(n_audio_features=8, n_vocab=len(TOKENIZER), d_model=16, n_heads=2, d_ff=32, dropout=0.0,
                    max_audio_frames=32, max_caption_tokens=12, rlssr_hidden=0)
    return AudioCaptioner(ModelDimensions(**{**settings, **overrides})).eval()


def clips(seed=1):
    torch.manual_seed(seed)
    return torch.randn(3, 10, 8), torch.tensor([10, 4, 7])  # frames (B, T, D_in), frame_lengths


def encoded_batch(model, seed=1):
    with torch.no_grad():
        return model.encode(*clips(seed))


@pytest.fixture(scope="module")
def trained_model() -> AudioCaptioner:
    """Briefly fitted to three clips, so it ends captions with a chosen <eos> (untrained ones never stop)."""
    model = tiny_model(max_caption_tokens=30).train()
    captions = ["a dog barks loudly", "rain falls on the roof", "birds sing"]
    targets = [torch.tensor(TOKENIZER.encode(c) + [TOKENIZER.eos]) for c in captions]
    tokens_out = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
    tokens_in = torch.cat([torch.full((3, 1), TOKENIZER.bos), tokens_out[:, :-1]], dim=1)
    for _ in range(80):  # plain gradient descent: torch.optim would import torch._dynamo (seconds)
        logits = model(*clips(), tokens_in)["logits"]
        loss = F.cross_entropy(logits.transpose(1, 2), tokens_out, ignore_index=TOKENIZER.pad)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= 0.3 * parameter.grad
    return model.eval()


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 1 MiB filesystem (tmpfs), to run out of space for real; needs root to mount."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # a lock file of the run may still be open
