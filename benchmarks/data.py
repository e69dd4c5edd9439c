"""Can the feature cache feed training? Batches/s from the cache vs training steps/s of the model.

    python -m benchmarks.data [--batch-size 32] [--epochs 3]   (from the project root)

1. Fills a feature cache with `scratch-cnn10` frames (512-d, 6.25 frames/s, the shape of PANNs
   CNN10) of the real Clotho clips in ../shared/data, then times the training loop's own data
   path — (memory-mapped frames, caption ids) pairs through a shuffling DataLoader with
   `train.collate` — over those entries repeated to `--samples` pairs, with 0 (what `audiocap
   train` uses) and 2 worker processes. The repeated entries sit in the page cache, as a 1 GB Clotho cache
   does on a machine with RAM to spare; from a cold disk, the disk sets the rate.
2. Times a training step (forward, cross-entropy, backward, AdamW) on a batch of the same shape
   for `audiocap.model.AudioCaptioner` at its default dimensions, and for a stand-in
   `torch.nn.Transformer` (d_model 256, 3 + 3 layers), the size the issue names as default.

The loader must deliver at least 5x the step rate (issue 6).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from audiocap.data.cache import FeatureCache
from audiocap.encoders import create_encoder
from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.batches import collate

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clotho" / "audio" / "validation"
VOCAB, CAPTION_TOKENS = 5000, 22  # a Clotho-sized vocabulary; <bos> + a typical caption


def loader_batches_per_second(pairs: list, batch_size: int, workers: int, epochs: int) -> float:
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate, persistent_workers=workers > 0)
    next(iter(loader))  # worker start-up is paid once per run, not per batch
    start, batches = time.perf_counter(), 0
    for _ in range(epochs):
        for _ in loader:
            batches += 1
    return batches / (time.perf_counter() - start)


def steps_per_second(step, batch: dict, steps: int) -> float:
    step(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return steps / (time.perf_counter() - start)


def captioner_step(dim: int):
    model = AudioCaptioner(ModelDimensions(n_audio_features=dim, n_vocab=VOCAB))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        frames, frame_lengths = batch[:2]
        tokens = torch.randint(4, VOCAB, (len(frames), CAPTION_TOKENS + 1))
        out = model(frames, frame_lengths, tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(out["logits"].transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def stand_in_transformer_step(dim: int):
    d_model = 256
    project, embed = torch.nn.Linear(dim, d_model), torch.nn.Embedding(VOCAB, d_model)
    transformer = torch.nn.Transformer(d_model, nhead=4, num_encoder_layers=3, num_decoder_layers=3,
                                       dim_feedforward=1024, batch_first=True)
    head = torch.nn.Linear(d_model, VOCAB)
    modules = torch.nn.ModuleList([project, embed, transformer, head])
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(CAPTION_TOKENS)

    def step(batch):
        frames, frame_lengths = batch[:2]
        tokens = torch.randint(4, VOCAB, (len(frames), CAPTION_TOKENS + 1))
        padding = torch.arange(frames.shape[1])[None, :] >= frame_lengths[:, None]
        hidden = transformer(project(frames), embed(tokens[:, :-1]), tgt_mask=causal,
                             src_key_padding_mask=padding, memory_key_padding_mask=padding)
        loss = torch.nn.functional.cross_entropy(head(hidden).transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=960, help="dataset size (the clips, repeated)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps timed per model")
    args = parser.parse_args()
    torch.set_num_threads(2)

    clips = sorted(SHARED_CLIPS.glob("*.wav"))
    encoder = create_encoder("scratch-cnn10").freeze()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        frames = FeatureCache(root).get_many(encoder, clips)
        print(f"filled the cache with {len(clips)} clips in {time.perf_counter() - start:.1f} s")
        caption_ids = list(range(4, 4 + CAPTION_TOKENS - 1))  # <bos> + these = CAPTION_TOKENS
        pairs = [(frames[i % len(clips)], caption_ids) for i in range(args.samples)]
        rates = {w: loader_batches_per_second(pairs, args.batch_size, w, args.epochs) for w in (0, 2)}
        batch = collate(pairs[:args.batch_size])

    print(f"batch: frames {tuple(batch[0].shape)}, captions of {CAPTION_TOKENS} tokens")
    for workers, rate in rates.items():
        print(f"loader, {workers} workers: {rate:8.1f} batches/s")
    for name, make_step in [("AudioCaptioner(default dims)", captioner_step),
                            ("nn.Transformer 256-d 3+3 (stand-in)", stand_in_transformer_step)]:
        rate = steps_per_second(make_step(encoder.dim), batch, args.steps)
        print(f"training step, {name}: {rate:6.2f} steps/s -> loader margin "
              f"{min(rates.values()) / rate:.0f}x (need >= 5x)")


if __name__ == "__main__":
    main()
