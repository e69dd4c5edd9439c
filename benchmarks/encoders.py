"""Speed of the front end and the encoders on 10 s clips, on one CPU core.

    python benchmarks/encoders.py [--repeats 3] [--encoders panns-cnn10 aisfx ...]

Prints real-time factor (seconds of audio per second of compute) and clips/s at batch 1 and 8,
and each encoder's overhead: its time over the same computation written with bare torch ops
(torch.stft, F.conv2d, F.batch_norm, ...) with the same weights, the median ratio of paired runs in
alternating order. The bare version keeps PyTorch's default (NCHW) layout, so an overhead below 1 is
what channels-last memory gains (see encoders/panns.ConvBlock).
Targets (issue 3): front end >= 500x real time; overhead <= 1.1x.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from audiocap.mel import PANNS_MEL, log_mel_spectrogram, mel_filters
from audiocap.encoders import create_encoder
from audiocap.encoders.aisfx import AISFX_MEL, LOG_SPECTROGRAM_MAX

CLIP_SECONDS = 10


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, lazy init)
    return min(seconds(fn) for _ in range(repeats))


def bare_log_mel(w: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, pad_mode: str, filters: torch.Tensor):
    spec = torch.stft(w, n_fft, hop, window=window, center=True, pad_mode=pad_mode, return_complex=True)
    return (spec.real.square() + spec.imag.square()).transpose(1, 2) @ filters  # (B, T, n_mels)


def bare_panns_log_mel(w: torch.Tensor, window: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """PANNs' log-mel front end (dB) with bare torch ops: (B, N) -> (B, T, n_mels)."""
    return 10 * torch.log10(bare_log_mel(w, PANNS_MEL.n_fft, PANNS_MEL.hop_length, window, "reflect",
                                         filters).clamp(min=1e-10))


def bare_panns(w: torch.Tensor, sd: dict, n_blocks: int, pool_last: bool) -> torch.Tensor:
    """PANNs frames with bare torch ops (eval mode)."""
    window = torch.hann_window(PANNS_MEL.n_fft)
    x = bare_panns_log_mel(w, window, sd["logmel_extractor.melW"])
    bn = lambda x, p: F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])
    x = bn(x[:, None].transpose(1, 3), "bn0").transpose(1, 3)
    for i in range(1, n_blocks + 1):
        x = F.relu(bn(F.conv2d(x, sd[f"conv_block{i}.conv1.weight"], padding=1), f"conv_block{i}.bn1"))
        x = F.relu(bn(F.conv2d(x, sd[f"conv_block{i}.conv2.weight"], padding=1), f"conv_block{i}.bn2"))
        x = F.avg_pool2d(x, 2) if i < n_blocks or pool_last else x
    return x.mean(dim=3).transpose(1, 2)


def bare_aisfx(w: torch.Tensor, sd: dict, filters: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(AISFX_MEL.n_fft, periodic=False)
    x = torch.log10(1e4 * bare_log_mel(w, AISFX_MEL.n_fft, AISFX_MEL.hop_length, window, "constant", filters) + 1)
    x = x / LOG_SPECTROGRAM_MAX
    n_blocks = 1 + max(0, -(-(x.shape[1] - 100) // 50))
    x = F.pad(x, (0, 0, 0, (n_blocks - 1) * 50 + 100 - x.shape[1])).unfold(1, 100, 50).transpose(2, 3).flatten(0, 1)
    x = x[:, None]
    bn = lambda x, p: F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])
    for i in range(1, 5):
        p = f"embedding_net.conv_block{i}"
        x = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], padding=1), f"{p}.bn1"))
        x = F.relu(bn(F.conv2d(x, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"))
        x = F.max_pool2d(x, 2) if i < 4 else x
    return x.mean(dim=3).amax(dim=2).view(len(w), n_blocks, -1)


def bare_version(name: str, encoder):
    sd = encoder.state_dict()
    if name == "aisfx":
        return lambda w: bare_aisfx(w, sd, encoder.mel_filters)
    return lambda w: bare_panns(w, sd, len(encoder.blocks), encoder.pool_last_block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=["panns-cnn10", "panns-cnn14", "aisfx"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    print(f"10 s clips, 1 thread, best of {args.repeats}\n")
    print("| stage | batch | real-time factor | clips/s | overhead vs bare torch |")
    print("|---|---|---|---|---|")
    filters = torch.from_numpy(mel_filters(PANNS_MEL)).float()  # = the PANNs encoders' melW
    window = torch.hann_window(PANNS_MEL.n_fft)
    for batch in (1, 8):
        w = torch.randn(batch, PANNS_MEL.sample_rate * CLIP_SECONDS) * 0.1
        ours = best_time(lambda: log_mel_spectrogram(w, filters=filters), args.repeats * 5)
        bare = best_time(lambda: bare_panns_log_mel(w, window, filters), args.repeats * 5)
        print(f"| log-mel front end | {batch} | {batch * CLIP_SECONDS / ours:.0f}x | {batch / ours:.1f} | {ours / bare:.2f}x |")

    for name in args.encoders:
        encoder = create_encoder(name, pretrained=name != "panns-cnn10" and name != "panns-cnn14").eval()
        bare_fn = bare_version(name, encoder)
        for batch in (1, 8):
            w = torch.randn(batch, encoder.sample_rate * CLIP_SECONDS) * 0.1
            lengths = torch.full((batch,), w.shape[1])
            with torch.no_grad():  # the first calls check equality and warm up
                torch.testing.assert_close(encoder(w, lengths)[0], bare_fn(w), atol=1e-3, rtol=1e-3)
                ours, bare = [], []
                # paired and in alternating order: load changes hit both alike, and neither always runs
                # first (on this VM the first of a pair ran up to 20 % slower)
                pair = [(ours, lambda: encoder(w, lengths)), (bare, lambda: bare_fn(w))]
                for i in range(2 * args.repeats):
                    for times, run in (pair if i % 2 == 0 else pair[::-1]):
                        times.append(seconds(run))
            t = min(ours)
            overhead = statistics.median(a / b for a, b in zip(ours, bare))
            print(f"| {name} | {batch} | {batch * CLIP_SECONDS / t:.1f}x | {batch / t:.2f} | {overhead:.3f}x |")


if __name__ == "__main__":
    main()
