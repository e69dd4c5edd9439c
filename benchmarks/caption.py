"""Captioning speed on 10 s clips: captions/s for greedy vs beam 3 and batch 1 vs 16, the share
of each clip's time spent decoding, and the cold start of `audiocap caption` on one clip.

    python benchmarks/caption.py [--encoder scratch-cnn10] [--clips 16] [--threads 2] [--batch-sizes 1,16]
    python benchmarks/caption.py --model n_decoder_layers=1    # another size than the recipe's (model: keys)

Decoder weights in float32, float16 (the CPU default of `audiocap caption`) and int8 (audiocap.quantize).
The captioner has the size of configs/clotho_cnn10_rlssr.yaml with a Clotho-sized vocabulary and
random weights; every caption is forced to `--words` words (Clotho's mean is ~11), so decoding
does the work a trained model does. `scratch-cnn10` costs exactly what `panns-cnn10` costs.
Target: beam-3 decoding ≤ 15 % of per-clip time with a Cnn10-sized encoder.

Fairness on a shared machine: every configuration is warmed up once, then all are measured in turn
`--repeats` times and the median is reported, so a burst of load from other jobs hits every row alike;
each batch is encoded once and decoded by every decoder precision in turn, and the decoder's share
comes from the encoder and decoder times of the same batches. OpenMP threads sleep
while idle, as in `audiocap caption` (see transcribe.run_caption); with spinning threads, `--threads 2`
next to a training job measures the scheduler rather than the code.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as `audiocap caption` does

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clotho" / "audio" / "validation"


def build_pipeline(encoder_name: str, n_vocab: int, model_overrides: list[str] = ()):
    from audiocap.config import load_config, model_dimensions
    from audiocap.encoders import create_encoder
    from audiocap.model import AudioCaptioner, ModelDimensions
    from audiocap.tokenizer import Tokenizer
    from audiocap.config import TrainConfig
    from audiocap.caption import CaptioningPipeline

    torch.manual_seed(0)
    # the recipe's sizes, with `model.KEY=VALUE` overrides, read, checked and turned into dimensions as
    # `audiocap train` does
    config = load_config(TrainConfig, ROOT / "configs" / "clotho_cnn10_rlssr.yaml",
                         [f"model.{item}" for item in model_overrides])
    encoder = create_encoder(encoder_name).freeze()
    tokenizer = Tokenizer(f"word{i}" for i in range(n_vocab - 4))
    dims = model_dimensions(config, encoder.dim, tokenizer.n_vocab)
    return CaptioningPipeline(encoder, AudioCaptioner(dims), tokenizer, torch.device("cpu"))


def compact_copy(pipeline, precision: str):
    """The pipeline with its decoder's weights in `precision` (audiocap.quantize), as load_model makes it."""
    import copy

    from audiocap.quantize import prepare_decoder
    from audiocap.caption import CaptioningPipeline

    if precision == "fp32":
        return pipeline
    captioner = prepare_decoder(copy.deepcopy(pipeline.captioner).eval(), precision)
    return CaptioningPipeline(pipeline.encoder, captioner, pipeline.tokenizer, pipeline.device)


def time_batches(pipelines: dict, waveforms, batch_size: int, beam_size: int, words: int) -> dict:
    """{precision: (seconds in audio encoder + transformer encoder, seconds decoding)} over all clips.

    The encoders are float32 whatever the decoder's precision, so each batch is encoded once and then
    decoded by every decoder in turn: a burst of load from other jobs hits all precisions alike."""
    from audiocap.decoding import DecodingOptions, decode

    options = DecodingOptions(beam_size=beam_size, min_length=words, max_length=words)
    reference = next(iter(pipelines.values()))
    encode_s, decode_s = 0.0, dict.fromkeys(pipelines, 0.0)
    with torch.inference_mode():
        for start in range(0, len(waveforms), batch_size):
            batch = waveforms[start:start + batch_size]  # B clips of (N,): all 10 s
            t0 = time.perf_counter()
            clips = reference.encoder.encode_clips(batch)  # as `audiocap caption` encodes (one clip per pass on CPU)
            frames = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)  # (B, T, D)
            frame_lengths = torch.tensor([len(f) for f in clips])
            memory, memory_mask = reference.captioner.encode(frames, frame_lengths)  # (B, T, d)
            encode_s += time.perf_counter() - t0
            for precision, pipeline in pipelines.items():
                t1 = time.perf_counter()
                decode(pipeline.captioner, memory, memory_mask, pipeline.tokenizer, options)
                decode_s[precision] += time.perf_counter() - t1
    return {precision: (encode_s, decode_s[precision]) for precision in pipelines}


def cold_start(pipeline, clip: Path, repeats: int) -> list[float]:
    """Wall times of `python -m audiocap caption CLIP --model M` in fresh processes (import included)."""
    import soundfile as sf

    from audiocap.model_file import save_model

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.safetensors"
        save_model(model, pipeline.captioner, pipeline.tokenizer, pipeline.encoder)
        audio, rate = sf.read(clip, frames=10 * 44100, dtype="float32")
        sf.write(Path(tmp) / "clip.wav", audio, rate)
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the command's own default
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "audiocap", "caption", str(Path(tmp) / "clip.wav"), "--model",
                            str(model), "--device", "cpu"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
            times.append(time.perf_counter() - t0)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="scratch-cnn10")
    parser.add_argument("--clips", type=int, default=16, help="10 s clips per measurement")
    parser.add_argument("--words", type=int, default=11, help="words per caption")
    parser.add_argument("--vocab", type=int, default=4500, help="vocabulary size (Clotho development: ~4.5k)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="decoder weights to compare (audiocap.quantize)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per configuration (median reported)")
    parser.add_argument("--batch-sizes", default="1,16", help="clips per batch to compare (`audiocap caption`: 8)")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="override a `model:` size of configs/clotho_cnn10_rlssr.yaml, e.g. n_decoder_layers=1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from audiocap.audio import load_audio

    pipeline = build_pipeline(args.encoder, args.vocab, args.model)
    rate = pipeline.sample_rate
    sources = sorted(CLIPS.glob("*.wav"))
    clips = [torch.from_numpy(load_audio(p, rate)[: 10 * rate]) for p in sources]
    clips = [c for c in clips if len(c) == 10 * rate]
    waveforms = [clips[i % len(clips)] for i in range(args.clips)]
    pipelines = {precision: compact_copy(pipeline, precision) for precision in args.precisions.split(",")}
    settings = [(beam, int(batch_size)) for beam in (1, 3) for batch_size in args.batch_sizes.split(",")]
    for beam, batch_size in settings:  # warm-up: first-call allocations of every batch shape
        time_batches(pipelines, waveforms[:batch_size], batch_size, beam, args.words)
    runs = {(p, beam, batch_size): [] for p in pipelines for beam, batch_size in settings}  # (encode_s, decode_s)
    for _ in range(args.repeats):
        for beam, batch_size in settings:
            for precision, times in time_batches(pipelines, waveforms, batch_size, beam, args.words).items():
                runs[precision, beam, batch_size].append(times)

    print(f"encoder {args.encoder}, {args.clips} clips of 10 s, {args.words} words/caption, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}"
          + "".join(f", {item}" for item in args.model))
    print(f"{'decoder':>7s} {'decoding':>8s} {'batch':>5s} {'captions/s':>10s} {'ms/clip':>8s} "
          f"{'decode ms/clip':>14s} {'decoder share':>13s} {'decoding vs fp32':>16s}")
    for (precision, beam, batch_size), times in runs.items():
        encode_s, decode_s = (statistics.median(t) for t in zip(*times))
        share = statistics.median(d / (e + d) for e, d in times)
        total = encode_s + decode_s
        name = "greedy" if beam == 1 else f"beam {beam}"
        speedup = ""
        if ("fp32", beam, batch_size) in runs:
            speedup = f"{statistics.median(d for _, d in runs['fp32', beam, batch_size]) / decode_s:15.2f}x"
        print(f"{precision:>7s} {name:>8s} {batch_size:5d} {args.clips / total:10.2f} {1000 * total / args.clips:8.1f} "
              f"{1000 * decode_s / args.clips:14.1f} {100 * share:12.1f}% {speedup}")
    times = cold_start(pipeline, sources[0], args.repeats)
    print(f"cold start of `audiocap caption` on one 10 s clip: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f} s; untrained, so {pipeline.captioner.dims.max_caption_tokens - 1} words)")


if __name__ == "__main__":
    main()
