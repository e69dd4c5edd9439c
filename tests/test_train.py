"""Training on the 15 real Clotho clips: the model learns, RLSSR on/off, exact resume, DDP == one process,
fine-tuning the audio encoder.

The encoder's frames are computed once per session into a shared feature cache; every training
run below reads them from there, as `audiocap train` does on a real dataset. Fine-tuning runs the
encoder at every step, so its tests use a tiny randomly initialised CNN10 on a few clips.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from audiocap.errors import ConfigError, DataError
from audiocap.train import TrainConfig, train
from audiocap.config import load_config
from audiocap.checkpoint import load_checkpoint
from tests.conftest import CLOTHO_VALIDATION_AUDIO

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "aisfx"  # real pretrained weights, small and fast on CPU


@pytest.fixture(scope="session")
def captions_csv(tmp_path_factory, shared_data, clotho_clips) -> Path:
    """The validation CSV's rows for the 15 clips we have audio for."""
    names = {p.name for p in clotho_clips}
    with open(shared_data / "clotho" / "clotho_captions_validation.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    path = tmp_path_factory.mktemp("data") / "captions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[0] in names])
    return path


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory, clotho_clips) -> Path:
    from audiocap.data.cache import FeatureCache
    from audiocap.encoders import create_encoder

    root = tmp_path_factory.mktemp("features")
    FeatureCache(root).get_many(create_encoder(ENCODER).freeze(), clotho_clips, progress=False)
    return root


def tiny_config(out_dir: Path, captions_csv: Path, feature_cache: Path, **overrides) -> TrainConfig:
    audio_dir = str(CLOTHO_VALIDATION_AUDIO)
    values = dict(
        train_csv=str(captions_csv), train_audio_dir=audio_dir, val_csv=str(captions_csv), val_audio_dir=audio_dir,
        out_dir=str(out_dir), cache_dir=str(feature_cache), encoder=ENCODER,
        model=dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128, dropout=0.1,
                   rlssr_hidden=64),
        epochs=2, batch_size=16, learning_rate=3e-3, warmup_steps=5, label_smoothing=0.0,
        time_mask_width=4, feature_mask_width=16, val_metrics=[], best_metric="loss", seed=0,
    )
    return TrainConfig(**{**values, **overrides})


def first_clips_csv(captions_csv: Path, out: Path, n: int) -> Path:
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:n + 1]
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return out


def train_killed_after_epoch_1(config: TrainConfig, monkeypatch) -> None:
    """Start `config` and let the process die right after the epoch-1 checkpoint is written."""
    import audiocap.train as train_module

    class Killed(Exception):
        pass

    save = train_module.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if path.name == "last.pt":
            raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(config)
    monkeypatch.setattr(train_module, "save_checkpoint", save)


def train_losses(out_dir: Path) -> list[float]:
    """The per-step `train/loss` scalars that training wrote to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return [e.value for e in events.Scalars("train/loss")]


# ---------------------------------------------------------------------------------------------


def test_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train_csv": "a.csv", "train_audio_dir": "a", "val_csv": "b.csv",
                                    "val_audio_dir": "b", "model": {"d_model": 128}}))
    config = load_config(TrainConfig, path, ["epochs=3", "learning_rate=3e-4", "model.n_heads=2", "bf16=true"])
    assert (config.epochs, config.learning_rate, config.bf16) == (3, 3e-4, True)
    assert config.model == {"d_model": 128, "n_heads": 2}
    with pytest.raises(ConfigError, match="'epoch'"):
        load_config(TrainConfig, path, ["epoch=3"])
    with pytest.raises(ConfigError, match="epochs"):
        load_config(TrainConfig, path, ["epochs=many"])


@pytest.mark.parametrize("name", ["clotho_cnn10_rlssr", "clotho_cnn14_rlssr"])
def test_shipped_configs_are_valid(name):
    from audiocap.model import ModelDimensions
    from audiocap.config import model_dimensions

    config = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
    assert config.rlssr_weight > 0 and config.encoder.startswith("panns-")
    model_dimensions(config, n_audio_features=512, n_vocab=100)  # model keys are valid


def test_small_model_learns_to_caption_training_clips(tmp_path, captions_csv, feature_cache):
    import audiocap
    from audiocap.data.cache import FeatureCache
    from audiocap.data.datasets import load_captions_csv
    from audiocap.decoding import DecodingOptions
    from audiocap.model_file import load_model_file
    from audiocap.tokenizer import normalize
    from audiocap.train import caption_frames

    # Overfit 15 clips within a CPU minute: one caption per clip (with five, a tiny decoder can lower the
    # loss by memorising the 75 captions as a language model without listening), no dropout or SpecAugment.
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = [row[:2] for row in csv.reader(f)]
    captions_csv = tmp_path / "one_caption_per_clip.csv"
    with open(captions_csv, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    model = dict(d_model=128, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=256, dropout=0.0, rlssr_hidden=64)
    config = tiny_config(tmp_path, captions_csv, feature_cache, epochs=50, batch_size=4, learning_rate=3e-3,
                         warmup_steps=10, time_masks=0, feature_masks=0, model=model,
                         val_metrics=["bleu"], best_metric="loss")
    model_path = train(config)
    losses = train_losses(tmp_path)
    assert sum(losses[-5:]) / 5 <= 0.5 * sum(losses[:5]) / 5, losses

    # greedy captions of every training clip, from its cached frames
    captioner, tokenizer, encoder = load_model_file(model_path)
    items = load_captions_csv(captions_csv, CLOTHO_VALIDATION_AUDIO)
    frames = FeatureCache(feature_cache).get_many(encoder, [it.audio_path for it in items], progress=False)
    captions = caption_frames(captioner.eval(), tokenizer, frames, 8, "cpu", DecodingOptions(beam_size=1))
    overlaps = []
    for item, caption in zip(items, captions):
        words = set(caption.split())
        overlaps.append(max(len(words & set(normalize(r).split())) / max(1, len(words)) for r in item.captions))
    assert sum(overlaps) / len(overlaps) >= 0.5, list(zip(captions, overlaps))

    # the model file alone captions raw audio (it holds the encoder): same captions as from the cache
    first = [it.audio_path for it in items[:2]]
    assert audiocap.load_model(model_path, device="cpu", precision="fp32").caption(first, beam_size=1) == captions[:2]


def test_trains_with_bf16_autocast(tmp_path, captions_csv, feature_cache, monkeypatch):
    from audiocap.model import AudioCaptioner

    logits_dtypes = set()
    forward = AudioCaptioner.forward

    def recording_forward(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        logits_dtypes.add(out["logits"].dtype)
        return out

    monkeypatch.setattr(AudioCaptioner, "forward", recording_forward)
    train(tiny_config(tmp_path, captions_csv, feature_cache, epochs=4, bf16=True))
    assert logits_dtypes == {torch.bfloat16}  # the forward pass ran under autocast, training and validation
    losses = train_losses(tmp_path)
    assert all(math.isfinite(x) for x in losses) and sum(losses[-3:]) < sum(losses[:3])
    checkpoint = load_checkpoint(tmp_path / "last.pt")  # master weights stay float32
    assert all(v.dtype == torch.float32 for v in checkpoint["model"].values() if v.is_floating_point())


def test_trains_without_rlssr(tmp_path, captions_csv, feature_cache):
    train(tiny_config(tmp_path, captions_csv, feature_cache, epochs=4, rlssr_weight=0.0))
    losses = train_losses(tmp_path)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert not any(k.startswith("rlssr_head") for k in load_checkpoint(tmp_path / "last.pt")["model"])


def test_resume_after_interruption_is_exact(tmp_path, captions_csv, feature_cache, monkeypatch):
    # augmentation, mixup and dropout all draw random numbers: resume must restore their state too
    make = lambda out: tiny_config(out, captions_csv, feature_cache, epochs=2, mixup_alpha=0.4)
    train(make(tmp_path / "straight"))
    train_killed_after_epoch_1(make(tmp_path / "resumed"), monkeypatch)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    train(make(tmp_path / "resumed"), resume=True)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (resumed["epoch"], resumed["step"]) == (straight["epoch"], straight["step"])
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for state_a, state_b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])


def test_text_pretraining_runs_first_and_an_interrupted_run_resumes_after_it(tmp_path, shared_data, captions_csv,
                                                                              feature_cache, monkeypatch):
    text = [str(shared_data / "clotho" / "clotho_captions_development.csv")]
    make = lambda out: tiny_config(out, captions_csv, feature_cache, epochs=1, text_captions=text, text_epochs=1)
    train(make(tmp_path / "straight"))
    train_killed_after_epoch_1(make(tmp_path / "resumed"), monkeypatch)  # the first last.pt: after the text stage
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 0
    train(make(tmp_path / "resumed"), resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["step"] == resumed["step"] > 0
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "straight" / "tensorboard"))
    events.Reload()
    assert events.Scalars("text/captions")[0].value > 100 and math.isfinite(events.Scalars("text/loss")[0].value)


def test_resume_refuses_changed_training_captions(tmp_path, captions_csv, feature_cache):
    csv_copy = first_clips_csv(captions_csv, tmp_path / "captions.csv", 4)
    config = tiny_config(tmp_path / "run", csv_copy, feature_cache, epochs=1)
    train(config)
    rows = list(csv.reader(open(csv_copy, newline="", encoding="utf-8")))
    rows[1][1] = "a zebra gallops across a xylophone"  # new words: another vocabulary
    with open(csv_copy, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ConfigError, match="training captions changed"):
        train(config, resume=True)


def test_two_process_ddp_equals_one_process_with_the_combined_batch(tmp_path, captions_csv, feature_cache):
    # 4 clips × 5 captions = 20 pairs: 2 steps of 10 pairs, or 2 steps of 5 pairs on each of 2 processes
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:5]
    small_csv = tmp_path / "four_clips.csv"
    with open(small_csv, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    deterministic = dict(epochs=1, time_masks=0, feature_masks=0, label_smoothing=0.1,
                         model=dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128,
                                    dropout=0.0, rlssr_hidden=64))
    train(tiny_config(tmp_path / "one", small_csv, feature_cache, batch_size=10, **deterministic))

    run_torchrun(tiny_config(tmp_path / "two", small_csv, feature_cache, batch_size=5, **deterministic), tmp_path)

    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_gradient_accumulation_equals_one_larger_batch_with_and_without_ddp(tmp_path, captions_csv, feature_cache):
    # 8 clips x 5 captions = 40 pairs: 2 steps of 20 pairs, as 1 batch of 20, as 4 accumulated batches of 5,
    # or as 2 accumulated batches of 5 on each of 2 processes. RLSSR on: its weight against the
    # cross-entropy (a mean over clips vs a sum over tokens) must not change with how a step is split.
    eight_clips = first_clips_csv(captions_csv, tmp_path / "eight_clips.csv", 8)
    deterministic = dict(epochs=1, time_masks=0, feature_masks=0, label_smoothing=0.1, rlssr_weight=1.0,
                         model=dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128,
                                    dropout=0.0, rlssr_hidden=64))
    train(tiny_config(tmp_path / "one", eight_clips, feature_cache, batch_size=20, **deterministic))
    train(tiny_config(tmp_path / "accum", eight_clips, feature_cache, batch_size=5, grad_accum_steps=4,
                      **deterministic))
    run_torchrun(tiny_config(tmp_path / "ddp_accum", eight_clips, feature_cache, batch_size=5, grad_accum_steps=2,
                             **deterministic), tmp_path)

    one = load_checkpoint(tmp_path / "one" / "last.pt")
    for run in ("accum", "ddp_accum"):
        other = load_checkpoint(tmp_path / run / "last.pt")
        assert one["step"] == other["step"] == 2
        for key, value in one["model"].items():
            torch.testing.assert_close(other["model"][key], value, rtol=1e-4, atol=1e-5, msg=f"{run}: {key}")
        assert train_losses(tmp_path / run) == pytest.approx(train_losses(tmp_path / "one"), rel=1e-5)


def test_early_stopping_ends_the_run_and_resume_keeps_it_ended(tmp_path, captions_csv, feature_cache, monkeypatch):
    import audiocap.train as train_module

    val_losses = iter([2.0, 1.0, 1.5, 1.2, 0.5, 0.4])  # best at epoch 2, then two epochs without a better one
    monkeypatch.setattr(train_module, "validation_loss", lambda *args: next(val_losses))
    four_clips = first_clips_csv(captions_csv, tmp_path / "four_clips.csv", 4)
    config = tiny_config(tmp_path / "run", four_clips, feature_cache, epochs=6, early_stopping_patience=2)
    train(config)
    last, best = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    assert (last["epoch"], last["best_epoch"], last["best_score"], best["epoch"]) == (4, 2, 1.0, 2)
    train(config, resume=True)  # the run has ended: nothing more is trained
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == last["step"]
    assert next(val_losses) == 0.5  # and nothing validated


# ---------------------------------------------------------------------------------------------
# fine-tuning the audio encoder

TINY_CNN10 = (4, 8, 8, 16)  # channels: 16-d frames, a forward + backward pass costs next to nothing


@pytest.fixture
def tiny_encoder() -> dict:
    """The initial state dict of the encoder `finetune_config` trains: scratch-cnn10 with TINY_CNN10 channels
    (training seeds torch with config.seed, 0, right before building the encoder)."""
    from audiocap.encoders import create_encoder

    torch.manual_seed(0)
    return create_encoder("scratch-cnn10", channels=TINY_CNN10).state_dict()


def finetune_config(out_dir: Path, captions_csv: Path, **overrides) -> TrainConfig:
    """Two training clips (10 pairs: 2 steps of 5 per epoch) in 1 s crops, one validation clip."""
    train_csv = first_clips_csv(captions_csv, out_dir.with_name(out_dir.name + "_train.csv"), 2)
    val_csv = first_clips_csv(captions_csv, out_dir.with_name(out_dir.name + "_val.csv"), 1)
    settings = dict(encoder_learning_rate=1e-3, crop_seconds=1.0, batch_size=5, warmup_steps=2,
                    encoder_options={"channels": list(TINY_CNN10)})
    config = tiny_config(out_dir, train_csv, out_dir / "cache", encoder="scratch-cnn10", finetune_encoder=True,
                         **{**settings, **overrides})
    return dataclasses.replace(config, val_csv=str(val_csv))


def test_finetuning_trains_the_encoder_into_the_model_file(tmp_path, captions_csv, tiny_encoder):
    import audiocap
    from audiocap.data.datasets import load_captions_csv
    from audiocap.decoding import DecodingOptions
    from audiocap.model_file import load_model_file
    from audiocap.train import caption_frames

    frozen = dataclasses.replace(finetune_config(tmp_path / "frozen", captions_csv, epochs=1), finetune_encoder=False)
    for key, value in load_model_file(train(frozen)).encoder.state_dict().items():
        assert torch.equal(value, tiny_encoder[key]), key  # frozen: bit-identical, batch-norm statistics too

    config = finetune_config(tmp_path / "finetuned", captions_csv, epochs=1)
    model_path = train(config)
    assert not (tmp_path / "finetuned" / "cache").exists()  # no frames are cached
    captioner, tokenizer, encoder = load_model_file(model_path)
    trained = encoder.state_dict()
    assert not torch.equal(trained["conv_block1.conv1.weight"], tiny_encoder["conv_block1.conv1.weight"])
    assert not torch.equal(trained["bn0.running_mean"], tiny_encoder["bn0.running_mean"])
    # the AudioSet tagging head does not produce frames: it stays frozen (and DDP needs no unused-parameter search)
    assert torch.equal(trained["fc_audioset.weight"], tiny_encoder["fc_audioset.weight"])
    for key, value in load_checkpoint(tmp_path / "finetuned" / "best.pt")["encoder"].items():
        assert torch.equal(value, trained[key]), key

    # the model file captions raw audio as its weights do in memory, from the fine-tuned encoder's frames
    paths = [it.audio_path for it in load_captions_csv(config.train_csv, CLOTHO_VALIDATION_AUDIO)]
    frames = [encoder.encode_file(p) for p in paths]
    in_memory = caption_frames(captioner, tokenizer, frames, 8, "cpu", DecodingOptions(beam_size=1))
    assert audiocap.load_model(model_path, device="cpu", precision="fp32").caption(paths, beam_size=1) == in_memory


def test_finetuning_resumes_exactly(tmp_path, captions_csv, tiny_encoder, monkeypatch):
    # random crops, SpecAugment and dropout draw random numbers; batch-norm statistics are encoder state
    train(finetune_config(tmp_path / "straight", captions_csv, epochs=2))
    train_killed_after_epoch_1(finetune_config(tmp_path / "resumed", captions_csv, epochs=2), monkeypatch)
    train(finetune_config(tmp_path / "resumed", captions_csv, epochs=2), resume=True)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (resumed["epoch"], resumed["step"]) == (straight["epoch"], straight["step"]) == (2, 4)
    for part in ("model", "encoder"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)


def run_torchrun(config: TrainConfig, tmp_path: Path, processes: int = 2) -> None:
    config_path = tmp_path / f"{Path(config.out_dir).name}.yaml"
    config_path.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                    "-m", "audiocap", "train", str(config_path)], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, timeout=300)


def test_finetuning_ddp_with_frozen_batchnorm_equals_one_process(tmp_path, captions_csv):
    # whole clips (random crops would differ between 1 and 2 processes), no SpecAugment, no dropout (in the
    # encoder neither: each process draws its own random numbers);
    # the subprocesses cannot see a monkeypatch: encoder_options makes the encoder tiny
    from audiocap.encoders import create_encoder

    torch.manual_seed(0)  # as training does right before building the encoder
    initial = create_encoder("scratch-cnn10", channels=TINY_CNN10).state_dict()
    deterministic = dict(epochs=1, crop_seconds=None, time_masks=0, feature_masks=0, encoder_batchnorm="frozen",
                         encoder_dropout=0.0,
                         model=dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128,
                                    dropout=0.0, rlssr_hidden=64))
    train(finetune_config(tmp_path / "one", captions_csv, **{**deterministic, "batch_size": 10}))
    run_torchrun(finetune_config(tmp_path / "two", captions_csv, **{**deterministic, "batch_size": 5}), tmp_path)

    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 1
    for part in ("model", "encoder"):
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=1e-4, atol=1e-5, msg=f"{part}.{key}")
    # frozen: the pretrained (here: initial) statistics are used and kept, while the convolutions train
    assert torch.equal(one["encoder"]["bn0.running_mean"], initial["bn0.running_mean"])
    assert torch.equal(one["encoder"]["conv_block1.bn1.running_var"], initial["conv_block1.bn1.running_var"])
    assert not torch.equal(one["encoder"]["conv_block1.conv1.weight"], initial["conv_block1.conv1.weight"])


def test_encoder_batchnorm_modes_per_device(capsys):
    from audiocap.batches import encoder_batchnorm_mode
    from audiocap.distributed import Distributed

    cpu_ddp, cuda_ddp = Distributed(0, 2, torch.device("cpu")), Distributed(0, 2, torch.device("cuda"))
    assert encoder_batchnorm_mode("auto", cuda_ddp) == "sync"
    assert encoder_batchnorm_mode("auto", Distributed(0, 1, torch.device("cuda"))) == "batch"
    assert encoder_batchnorm_mode("auto", cpu_ddp) == "batch"
    assert "encoder_batchnorm=frozen" in capsys.readouterr().out  # N processes != 1 process: said once
    assert encoder_batchnorm_mode("frozen", cpu_ddp) == "frozen"
    with pytest.raises(ConfigError, match="CUDA only"):
        encoder_batchnorm_mode("sync", cpu_ddp)


def test_bf16_autocast_trains(tmp_path, captions_csv, feature_cache):
    model_path = train(tiny_config(tmp_path, captions_csv, feature_cache, epochs=3, bf16=True))
    losses = train_losses(tmp_path)
    assert model_path.is_file() and all(map(math.isfinite, losses))
    assert sum(losses[-2:]) < sum(losses[:2]), losses


def test_encoder_options_reach_the_encoder(tmp_path):
    """`encoder_options.pretrained=false` (the no-transfer ablation) is parsed as a bool and builds the
    encoder's architecture with random weights instead of the pretrained ones."""
    from audiocap.encoders import create_encoder

    config = load_config(TrainConfig, ROOT / "configs" / "default_aisfx_yamnet.yaml", ["encoder_options.pretrained=false"])
    assert config.encoder_options == {"pretrained": False}
    torch.manual_seed(0)
    random_init = create_encoder(config.encoder, checkpoint=config.encoder_checkpoint, **config.encoder_options)
    pretrained = create_encoder(config.encoder)
    assert random_init.weights_hash() != pretrained.weights_hash()


# ---------------------------------------------------------------------------------------------
# bad configs fail with a ConfigError naming the key, before any feature is extracted or file written


@pytest.fixture
def config_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"train_csv": "a.csv", "train_audio_dir": "a", "val_csv": "b.csv",
                                    "val_audio_dir": "b", "model": {"d_model": 64, "n_heads": 2}}))
    return path


@pytest.mark.parametrize("override, message", [
    ("model.d_model=abc", r"model.d_model='abc' should be of type int"),
    ("model.n_heads=3", r"model.d_model=64 and model.n_heads=3"),
    ("model.dropout=5", r"model.dropout=5.0: must be in \[0, 1\)"),
    ("model.n_heads=0", r"model.n_heads=0: must be at least 1"),
    ("model.tie_embeddings=3", r"model.tie_embeddings=3 should be of type bool"),
    ("model.max_caption_tokens=1", r"model.max_caption_tokens=1: must be at least 2"),
])
def test_bad_model_values_are_config_errors(config_yaml, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, config_yaml, [override])
    assert load_config(TrainConfig, config_yaml, ["model.dropout=0"]).model["dropout"] == 0.0  # an int is a float


@pytest.mark.parametrize("override", ["epochs=0", "epochs=-1", "batch_size=0", "learning_rate=0", "warmup_steps=-1",
                                      "label_smoothing=1", "grad_clip=0", "val_beam_size=0", "crop_seconds=0"])
def test_out_of_range_values_are_config_errors(config_yaml, override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=rf"config key {key}={value}(\.0)?: must be"):
        load_config(TrainConfig, config_yaml, [override])


def test_config_errors_name_where_the_value_came_from(config_yaml):
    with pytest.raises(ConfigError, match=r"^command-line override 'epochs=abc': epochs='abc' should be of type int"):
        load_config(TrainConfig, config_yaml, ["epochs=abc"])
    config_yaml.write_text(config_yaml.read_text() + "epochs: abc\n")
    with pytest.raises(ConfigError, match=rf"^{config_yaml}: epochs='abc'"):
        load_config(TrainConfig, config_yaml)


def test_best_metric_must_be_a_score_the_metrics_produce(config_yaml):
    with pytest.raises(ConfigError, match="bleu_1, bleu_2"):  # `bleu` gives bleu_1..bleu_4, no `bleu` score
        load_config(TrainConfig, config_yaml, ["val_metrics=[bleu]", "best_metric=bleu"])
    assert load_config(TrainConfig, config_yaml, ["val_metrics=[bleu]", "best_metric=bleu_4"]).best_metric == "bleu_4"


def test_bad_device_is_a_config_error(config_yaml, monkeypatch):
    from audiocap.distributed import setup_distributed

    with pytest.raises(ConfigError, match="device='gpu': choose one of auto, cpu, cuda"):
        load_config(TrainConfig, config_yaml, ["device=gpu"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # as on CPU-only PyTorch
    with pytest.raises(ConfigError, match="device=cuda: PyTorch sees 0 CUDA device"):
        setup_distributed("cuda")


def test_unknown_encoder_options_are_a_config_error_before_anything_is_written(tmp_path):
    config = TrainConfig(train_csv="a.csv", train_audio_dir="a", val_csv="b.csv", val_audio_dir="b",
                         out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), encoder=ENCODER,
                         encoder_options={"foo": 1})
    with pytest.raises(ConfigError, match=r"encoder_options=\{'foo': 1\} does not fit encoder 'aisfx'.*foo"):
        train(config)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_clips_longer_than_the_model_fail_before_training(tmp_path, captions_csv, feature_cache):
    model = dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128, max_audio_frames=8)
    with pytest.raises(DataError, match=r"15 clip\(s\) longer than the model covers \(model.max_audio_frames=8\): "
                                        r".*\.wav \(\d+ frames\).* set model.max_audio_frames=\d+ or more"):
        train(tiny_config(tmp_path / "run", captions_csv, feature_cache, model=model))
    assert not (tmp_path / "run").exists()  # no checkpoint, TensorBoard log or model file


def test_finetuning_checks_clip_lengths_before_training(tmp_path, captions_csv, tiny_encoder):
    # training crops of 1 s fit in 8 frames, but validation encodes the whole clip
    model = dict(d_model=64, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=128, max_audio_frames=8)
    with pytest.raises(DataError, match=r"1 clip\(s\) longer .*crop_seconds="):
        train(finetune_config(tmp_path / "run", captions_csv, model=model))
    assert not (tmp_path / "run").exists()


def audiocaps_csv(captions_csv: Path, out: Path, missing_ids: tuple[str, ...] = ()) -> Path:
    """`captions_csv` in AudioCaps' shape (one row per caption, the clip named by its file's stem), plus rows
    for clips whose audio is absent, as in every real AudioCaps copy."""
    with open(captions_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        captions = [(Path(r[0]).stem, c) for r in rows for c in r[1:]] + [(m, "a zzqv video") for m in missing_ids]
        writer.writerows((i, yid, 30, caption) for i, (yid, caption) in enumerate(captions))
    return out


def test_trains_on_an_audiocaps_csv_skipping_missing_videos(tmp_path, captions_csv, feature_cache):
    csv_path = audiocaps_csv(captions_csv, tmp_path / "audiocaps.csv", missing_ids=("gone_video_1",))
    config = tiny_config(tmp_path / "run", csv_path, feature_cache, epochs=1)
    with pytest.raises(DataError, match=r"(?s)or use skip_bad_items=true.*missing audio: gone_video_1"):
        train(config)
    model_file = train(dataclasses.replace(config, skip_bad_items=True))
    from audiocap.caption import load_model

    tokenizer_words = set(load_model(model_file, device="cpu").tokenizer.itos)
    assert "zzqv" not in tokenizer_words  # the skipped row's caption is not trained on
    assert len(train_losses(tmp_path / "run")) == math.ceil(15 * 5 / 16)  # 15 clips x 5 captions, one epoch


class _WritesAFileWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_bad_checkpoint_is_refused_in_one_line_without_unpickling_it(tmp_path):
    from audiocap.errors import CheckpointError
    from audiocap.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(1000)}, "epoch": 1})
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    marker = tmp_path / "marker.txt"
    torch.save({"model": _WritesAFileWhenUnpickled(marker)}, tmp_path / "hostile.pt")
    for name, why in [("truncated.pt", "the file is truncated or corrupt"), ("hostile.pt", "refusing to unpickle it")]:
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(tmp_path / name)
        message = str(error.value)
        assert why in message and "\n" not in message and "weights_only" not in message, message
    assert not marker.exists()  # the hostile object was never rebuilt
    assert load_checkpoint(tmp_path / "good.pt")["epoch"] == 1
