"""Decoder pretraining on caption text alone (text_pretraining.py), on real caption CSVs."""
from __future__ import annotations

import random

import pytest
import torch

from audiocap.config import TrainConfig
from audiocap.errors import ConfigError
from audiocap.model import AudioCaptioner, ModelDimensions, caption_loss
from audiocap.text_pretraining import in_vocabulary, pretrain_decoder, read_caption_text, text_batches
from audiocap.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def clotho_development(shared_data):
    return shared_data / "clotho" / "clotho_captions_development.csv"


def test_reads_clotho_and_audiocaps_caption_csvs(shared_data, clotho_development, tmp_path):
    assert len(read_caption_text(clotho_development)) == 3839 * 5
    audiocaps = read_caption_text(shared_data / "audiocaps" / "train.csv")
    assert len(audiocaps) == 49838 and all(isinstance(c, str) and c for c in audiocaps)
    (tmp_path / "clips.csv").write_text("file_name,duration\na.wav,3\n")
    with pytest.raises(ConfigError, match="clips.csv has no caption"):
        read_caption_text(tmp_path / "clips.csv")
    with pytest.raises(ConfigError, match="cannot read"):
        read_caption_text(tmp_path / "missing.csv")


def test_keeps_only_distinct_captions_made_of_vocabulary_words():
    tokenizer = Tokenizer(["a", "dog", "barks", "cat", "meows"])
    kept = in_vocabulary(["A dog barks.", "a dog barks", "a cat meows loudly", "a cat meows", ""], tokenizer, 8)
    assert [tokenizer.decode(ids) for ids in kept] == sorted(["a dog barks", "a cat meows"],
                                                             key=lambda t: tokenizer.encode(t))
    assert in_vocabulary(["a dog barks a dog barks"], tokenizer, 4) == []  # too long for the decoder


def test_batches_are_bos_shifted_and_padded():
    frames, frame_lengths, tokens_in, tokens_out = next(text_batches([[5, 6], [7]], 16, 2, random.Random(0)))
    assert frames.shape == (2, 1, 16) and not frames.any() and frame_lengths.tolist() == [1, 1]
    rows = {tuple(r) for r in tokens_in.tolist()}, {tuple(r) for r in tokens_out.tolist()}
    assert rows == ({(1, 5, 6), (1, 7, 0)}, {(5, 6, 2), (7, 2, 0)})


def language_model_loss(model: AudioCaptioner, captions: list[list[int]]) -> float:
    model.eval()
    with torch.no_grad():
        frames, frame_lengths, tokens_in, tokens_out = next(
            text_batches(captions, model.dims.n_audio_features, len(captions), random.Random(0)))
        out = model(frames, frame_lengths, tokens_in)
        return caption_loss(out, tokens_out, rlssr_weight=0.0).total.item()


def test_text_stage_teaches_the_decoder_the_language_and_leaves_the_rest(shared_data, clotho_development, tmp_path):
    captions = read_caption_text(clotho_development)
    tokenizer = Tokenizer.build(captions, min_count=20)
    training, held_out = captions[:6000], captions[15000:]  # held-out sentences: learnt language, not recall
    (tmp_path / "text.csv").write_text("caption\n" + "\n".join(f'"{c}"' for c in training) + "\n")
    torch.manual_seed(0)
    model = AudioCaptioner(ModelDimensions(n_audio_features=16, n_vocab=tokenizer.n_vocab, d_model=64, n_heads=2,
                                           n_encoder_layers=1, n_decoder_layers=1, d_ff=128, rlssr_hidden=32))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    test_ids = in_vocabulary(held_out, tokenizer, 31)[:300]
    loss_before = language_model_loss(model, test_ids)
    config = TrainConfig(train_csv="t", train_audio_dir="a", val_csv="v", val_audio_dir="a", batch_size=64,
                         learning_rate=3e-3, text_captions=[str(tmp_path / "text.csv")], text_epochs=1)
    report = pretrain_decoder(config, model, tokenizer, torch.device("cpu"), show_progress=False)
    assert report["captions"] > 1000 and report["steps"] == -(-report["captions"] // 64)
    assert language_model_loss(model, test_ids) < 0.8 * loss_before
    changed = {k for k, v in model.named_parameters() if not torch.equal(before[k], v)}
    decoder = {k for k in before if k.startswith("decoder.")}
    # the encoder and the RLSSR head stay; in the decoder, only what a constant memory gives no gradient stays
    assert changed <= decoder and {k for k in decoder if "cross_attn" not in k} <= changed


def test_text_captions_and_text_epochs_go_together():
    base = dict(train_csv="t", train_audio_dir="a", val_csv="v", val_audio_dir="a")
    with pytest.raises(ConfigError, match="go together"):
        TrainConfig(**base, text_captions=["captions.csv"])
    with pytest.raises(ConfigError, match="go together"):
        TrainConfig(**base, text_epochs=2)
