"""Training against hostile conditions: a non-finite loss stops the run and nothing non-finite is saved; a
second run on the same out_dir is refused; out_dir can move before --resume; a full disk is one line."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from audiocap.errors import AudiocapError, CheckpointError, ConfigError
from audiocap.train import train
from audiocap.checkpoint import load_checkpoint
from tests.test_train import captions_csv, feature_cache, tiny_config, train_killed_after_epoch_1  # noqa: F401


def test_a_non_finite_loss_stops_the_run_and_saves_nothing_non_finite(tmp_path, captions_csv, feature_cache):
    config = tiny_config(tmp_path / "run", captions_csv, feature_cache, learning_rate=1e30, warmup_steps=1,
                         grad_clip=1e30, batch_size=4)
    with pytest.raises(AudiocapError, match=r"training loss is (nan|inf) at step \d+ \(epoch 1\)") as error:
        train(config)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "model.safetensors").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_save_model_refuses_non_finite_weights(tmp_path):
    from audiocap.encoders import create_encoder
    from audiocap.model import AudioCaptioner, ModelDimensions
    from audiocap.model_file import save_model
    from audiocap.tokenizer import Tokenizer

    encoder = create_encoder("scratch-cnn10", channels=(4, 8))
    tokenizer = Tokenizer.build(["a dog barks"])
    captioner = AudioCaptioner(ModelDimensions(encoder.dim, tokenizer.n_vocab, d_model=16, n_heads=2, d_ff=32))
    with torch.no_grad():
        captioner.decoder.ln.weight[0] = float("nan")
    with pytest.raises(CheckpointError, match="not saved: weight captioner.decoder.ln.weight holds NaN"):
        save_model(tmp_path / "m.safetensors", captioner, tokenizer, encoder)
    assert not list(tmp_path.iterdir())


def test_a_second_run_on_the_same_out_dir_is_refused(tmp_path, captions_csv, feature_cache):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom "
                               "audiocap.checkpoint import lock_out_dir\nlock = lock_out_dir(Path(sys.argv[1]))\n"
                               "print('locked', flush=True)\ntime.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"out_dir {out}: another training run \\(pid {holder.pid}\\)"):
            train(tiny_config(out, captions_csv, feature_cache, epochs=1))
    finally:
        holder.kill()
        holder.wait()
    train(tiny_config(out, captions_csv, feature_cache, epochs=1))  # the lock ended with its process
    assert (out / "model.safetensors").is_file()


def test_out_dir_can_move_between_interruption_and_resume(tmp_path, captions_csv, feature_cache, monkeypatch):
    train_killed_after_epoch_1(tiny_config(tmp_path / "first", captions_csv, feature_cache), monkeypatch)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    train(tiny_config(tmp_path / "moved", captions_csv, feature_cache), resume=True)
    assert load_checkpoint(tmp_path / "moved" / "last.pt")["epoch"] == 2


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_file(small_disk, captions_csv,
                                                                                 feature_cache):
    config = tiny_config(small_disk / "run", captions_csv, feature_cache, epochs=1,
                         model=dict(d_model=128, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=512))
    with pytest.raises(CheckpointError, match="cannot write the checkpoint") as error:
        train(config)
    assert "\n" not in str(error.value)
    assert not list((small_disk / "run").glob("*.tmp")) and not (small_disk / "run" / "model.safetensors").exists()
