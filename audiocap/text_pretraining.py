"""Decoder pretraining on caption text alone: the optional first stage of `audiocap train`.

People describe sounds in recurring phrasings ("a man speaks as a vehicle passes by"). Human
captions without their audio (AudioCaps train, Clotho development: `text_captions` in the config)
can teach the decoder that language before it learns to ground it in audio. Only captions whose
every word is in the training vocabulary are used, so the model learns no word that no recording
taught it. The audio memory is a single zero frame: the decoder is trained as a language model
(cross-entropy only; the RLSSR head, whose target would be that constant memory, is left alone).
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiocap.batches import collate
from audiocap.config import TrainConfig
from audiocap.errors import ConfigError
from audiocap.model import AudioCaptioner, caption_loss
from audiocap.tokenizer import Tokenizer

def read_caption_text(path: Path) -> list[str]:
    """The captions of a Clotho-format (`caption_1..caption_N`) or AudioCaps (`caption`) CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"text_captions: cannot read {path} ({e}); give Clotho or AudioCaps caption CSVs") from None
    columns = [c for c in (rows[0] if rows else {}) if c == "caption" or c.startswith("caption_")]
    if not columns:
        raise ConfigError(f"text_captions: {path} has no caption or caption_1.. column (or no rows); "
                          "give Clotho or AudioCaps caption CSVs")
    return [row[c] for row in rows for c in columns if row[c] and row[c].strip()]


def in_vocabulary(captions: list[str], tokenizer: Tokenizer, max_tokens: int) -> list[list[int]]:
    """Token ids of the distinct captions with no `<unk>` that fit the decoder."""
    encoded = {tuple(tokenizer.encode(c)) for c in captions}
    return sorted(list(ids) for ids in encoded if ids and len(ids) <= max_tokens and Tokenizer.unk not in ids)


def text_batches(captions: list[list[int]], n_audio_features: int, batch_size: int, rng: random.Random):
    """Batches of one shuffled pass, as `batches.collate` makes them from clips: here each clip is one
    zero frame, so the decoder sees no audio."""
    silence = np.zeros((1, n_audio_features), dtype=np.float32)
    order = rng.sample(captions, len(captions))
    for start in range(0, len(order), batch_size):
        yield collate([(silence, ids) for ids in order[start:start + batch_size]])


def pretrain_decoder(config: TrainConfig, model: AudioCaptioner, tokenizer: Tokenizer, device: torch.device,
                     show_progress: bool = True) -> dict:
    """`config.text_epochs` passes over the in-vocabulary captions of `config.text_captions`, training the
    decoder's weights only (AdamW at the config's learning rate, linear warm-up over the config's
    warmup_steps or a tenth of the stage, whichever is shorter). Deterministic given the
    seed, so every DDP process reaches the same weights. Returns {"captions": n, "steps": n, "loss": last}."""
    captions = in_vocabulary([c for path in config.text_captions for c in read_caption_text(Path(path))],
                             tokenizer, model.dims.max_caption_tokens - 1)
    if not captions:
        raise ConfigError("text_captions: no caption is made only of training-vocabulary words; "
                          "give caption CSVs of the same kind of sounds, or remove text_captions")
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    warmup = max(1, min(config.warmup_steps, config.text_epochs * len(captions) // config.batch_size // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    rng, steps, loss = random.Random(f"{config.seed}/text"), 0, float("nan")
    model.train()
    for epoch in range(config.text_epochs):
        batches = tqdm(text_batches(captions, model.dims.n_audio_features, config.batch_size, rng),
                       total=-(-len(captions) // config.batch_size), desc=f"text {epoch + 1}/{config.text_epochs}",
                       disable=not show_progress)
        for batch in batches:
            frames, frame_lengths, tokens_in, tokens_out = (x.to(device) for x in batch)
            out = model(frames, frame_lengths, tokens_in)
            total = caption_loss(out, tokens_out, rlssr_weight=0.0, label_smoothing=config.label_smoothing).total
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            steps, loss = steps + 1, total.item()
            batches.set_postfix(loss=f"{loss:.3f}")
    return {"captions": len(captions), "steps": steps, "loss": loss}
