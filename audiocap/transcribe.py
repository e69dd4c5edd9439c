"""Caption audio: the `audiocap caption` command and the Python API.

    model = audiocap.load_model()                        # bundled default model, or a path
    model.caption(["dog.wav", waveform], beam_size=3)    # -> ["a dog barks ...", ...]

Per batch: waveforms (B, N) -> audio encoder -> frames (B, T, D) -> transformer encoder ->
memory (B, T, d) -> beam search -> captions. Heavy modules are imported inside functions so that
`audiocap caption` starts fast.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "assets" / "default_model.safetensors"
USER_DECODING_DEFAULTS = {"ban_repeated_content_words": True, "length_penalty": 0.5}  # see CaptioningPipeline.caption


class CaptioningPipeline:
    """A loaded model file: audio encoder + captioner + tokenizer on one device."""

    def __init__(self, encoder, captioner, tokenizer, device):
        self.encoder = encoder.eval()
        self.captioner = captioner.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.sample_rate: int = encoder.sample_rate  # arrays passed to `caption` must be at this rate
        self.precision: str = getattr(captioner, "decoder_precision", "fp32")  # of the decoder's weights (quantize.py)

    def caption(self, paths_or_arrays, beam_size: int = 3, batch_size: int = 8, **decoding_options) -> list[str]:
        """One caption per input: an audio file path, or a mono float waveform at `self.sample_rate`.
        `decoding_options` are further fields of decoding.DecodingOptions (e.g. max_length). Two defaults
        differ from the bare DecodingOptions, chosen on the default model's held-out clips (CIDEr-D 0.61
        -> 0.70): a content word is not repeated (a model trained on two-source captions otherwise
        writes "rain falls as rain falls"), and beams are ranked by log_prob / n_tokens ** 0.5."""
        import numpy as np

        from audiocap.audio import load_audio

        if isinstance(paths_or_arrays, (str, Path, np.ndarray)):
            paths_or_arrays = [paths_or_arrays]
        captions = []
        for start in range(0, len(paths_or_arrays), batch_size):
            batch = paths_or_arrays[start:start + batch_size]
            waveforms = [load_audio(x, self.sample_rate) if isinstance(x, (str, Path)) else np.asarray(x, np.float32)
                         for x in batch]
            captions += self.caption_waveforms(waveforms, beam_size, **decoding_options)
        return captions

    def caption_waveforms(self, waveforms: list, beam_size: int = 3, **decoding_options) -> list[str]:
        """Caption one batch of mono waveforms (each (N_i,) at `self.sample_rate`)."""
        import torch

        from audiocap.decoding import DecodingOptions, decode

        if not waveforms:
            return []
        lengths = torch.tensor([len(w) for w in waveforms])
        batch = torch.zeros(len(waveforms), int(lengths.max()))  # (B, N), zero-padded
        for i, w in enumerate(waveforms):
            batch[i, : len(w)] = torch.as_tensor(w)
        with torch.inference_mode():
            frames, frame_lengths = self.encoder(batch.to(self.device), lengths.to(self.device))  # (B,T,D), (B,)
            memory, memory_mask = self.captioner.encode(frames, frame_lengths)  # (B,T,d), (B,T)
            options = DecodingOptions(beam_size=beam_size, **{**USER_DECODING_DEFAULTS, **decoding_options})
            results = decode(self.captioner, memory, memory_mask, self.tokenizer, options)
        return [r.text for r in results]


def load_model(
    path: str | Path | None = None, device: str | None = None, precision: str = "auto"
) -> CaptioningPipeline:
    """Load a model file written by `audiocap train` (default: the model bundled with the package).

    `precision` of the decoder's weights (see audiocap.quantize): "fp32"; "fp16" (CPU: beam search ~1.4x
    faster, same captions as fp32 on the default model's 100 held-out clips); "int8" (CPU: fastest for one
    clip at a time, changes ~1 caption in 20); "auto" = fp16 on a CPU that has the kernel, else fp32.
    The audio encoder and the transformer encoder always run in float32."""
    import torch

    from audiocap import model_file
    from audiocap.errors import CheckpointError

    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = ("this installation has no bundled default model; pass --model PATH (train one with "
                "`audiocap train configs/clotho_cnn10_rlssr.yaml`)") if path == DEFAULT_MODEL else "check --model"
        raise CheckpointError(f"{path}: model file not found; {hint}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = decoder_precision(precision, device)
    captioner, tokenizer, encoder = model_file.load_model_file(path)
    from audiocap.quantize import prepare_decoder

    captioner = prepare_decoder(captioner.to(device), precision)
    return CaptioningPipeline(encoder.to(device), captioner, tokenizer, device)


PRECISIONS = ("auto", "fp32", "fp16", "int8")


def decoder_precision(precision: str, device) -> str:
    """The decoder-weight precision `load_model(..., precision)` uses on `device`."""
    from audiocap.errors import AudiocapError
    from audiocap.quantize import precision_available

    if precision not in PRECISIONS:
        raise AudiocapError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cpu" and precision_available("fp16") else "fp32"
    if precision != "fp32" and device.type != "cpu":
        raise AudiocapError(f"precision {precision} is for CPU inference, not device {device}; use --precision fp32")
    if precision != "fp32" and not precision_available(precision):
        raise AudiocapError(f"precision {precision}: this PyTorch build has no CPU kernel for it; use --precision fp32")
    return precision


# ---------------------------------------------------------------------------------------------
# command line


def configure_caption(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="AUDIO_OR_DIR", help="audio files, or folders to search for them")
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default: 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips captioned together (default: 8)")
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text",
                        help="text: `file: caption` lines; csv: DCASE `file_name,caption_predicted`; json: a list")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="decoder weights: auto = fp16 on CPU (same captions as fp32 on our held-out clips, "
                        "~1.4x faster beam search), fp32 elsewhere; int8 = fastest for one clip at a time, "
                        "changes ~1 caption in 20")


def run_caption(args) -> int:
    # Read by OpenMP when torch loads, so set before the first torch import: threads waiting for work sleep
    # instead of spinning. Spinning only pays off on cores nobody else uses; on a machine shared with a training
    # job the spinning threads took the CPU from the working ones (cold start 5 s -> 6-12 s measured here).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from audiocap.audio import AUDIO_EXTENSIONS  # after OMP_WAIT_POLICY: this imports torch
    from audiocap.errors import AudiocapError

    files, failed = find_audio_files(args.inputs)
    if not files:
        raise AudiocapError("no audio to caption; give audio files or folders that contain " + "/".join(AUDIO_EXTENSIONS))
    import csv
    import io
    import json

    from tqdm import tqdm

    from audiocap.audio import load_audio

    pipeline = load_model(args.model, args.device, args.precision)
    results = []  # (file, caption)

    def emit(path: Path, caption: str) -> None:
        results.append((path, caption))
        if args.format == "text":
            tqdm.write(f"{path}: {caption}", file=sys.stdout)
        elif args.format == "csv":
            line = io.StringIO()
            csv.writer(line, lineterminator="").writerow([path.name, caption])
            tqdm.write(line.getvalue(), file=sys.stdout)

    if args.format == "csv":
        print("file_name,caption_predicted", flush=True)
    with tqdm(total=len(files), unit="file", disable=len(files) < 2, file=sys.stderr) as progress:
        for start in range(0, len(files), args.batch_size):
            loaded = []  # (path, waveform): a bad file is reported and skipped, the batch goes on
            for path in files[start:start + args.batch_size]:
                try:
                    loaded.append((path, load_audio(path, pipeline.sample_rate)))
                except AudiocapError as err:
                    tqdm.write(f"error: {err}", file=sys.stderr)
                    failed += 1
                    progress.update(1)
            captions = pipeline.caption_waveforms([w for _, w in loaded], args.beam)
            for (path, _), caption in zip(loaded, captions):
                emit(path, caption)
                progress.update(1)
    if args.format == "json":
        print(json.dumps([{"file": str(p), "caption": c} for p, c in results], indent=2))
    return 1 if failed else 0


def find_audio_files(inputs: list[str]) -> tuple[list[Path], int]:
    """Files given directly (audio or not: loading tells) and audio files found under folders.
    Returns the files and the number of inputs that do not exist (reported on stderr)."""
    from audiocap.audio import AUDIO_EXTENSIONS

    files, missing = [], 0
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                print(f"error: {path}: folder contains no audio files ({', '.join(AUDIO_EXTENSIONS)})", file=sys.stderr)
                missing += 1
            files += found
        elif path.is_file():
            files.append(path)
        else:
            print(f"error: {path}: no such file or folder", file=sys.stderr)
            missing += 1
    return files, missing
