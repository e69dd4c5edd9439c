"""Caption audio: the `audiocap caption` command and the Python API.

    model = audiocap.load_model()                        # bundled default model, or a path
    model.caption(["dog.wav", waveform], beam_size=3)    # -> ["a dog barks ...", ...]

Per batch: waveforms -> audio encoder, each clip as if alone -> frames padded to (B, T, D) ->
transformer encoder -> memory (B, T, d) -> beam search -> captions. Recordings longer than a model
covers are captioned window by window (`caption_segments`, `--segment`).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import torch

from audiocap import model_file
from audiocap.audio import AudioTooLongError, as_waveform, display_path, load_audio, stream_audio
from audiocap.decoding import DecodingOptions, decode_n_best
from audiocap.errors import AudiocapError, AudioLoadError, CheckpointError, check_not_too_long
from audiocap.options import MAX_BEAM_SIZE, PRECISIONS
from audiocap.quantize import precision_available, prepare_decoder

DEFAULT_MODEL = Path(__file__).parent / "assets" / "default_model.safetensors"
USER_DECODING_DEFAULTS = {"ban_repeated_content_words": True, "length_penalty": 0.5}  # see CaptioningPipeline.caption
# Memory stays bounded whatever the clips' lengths: a batch holds at most BATCH_AUDIO_SECONDS of audio
# (8 clips of 30 s; clips are never split across batches), and a clip longer than CHUNK_SECONDS is encoded
# one chunk at a time (AudioEncoder.encode_clips): a batch of long recordings would otherwise need memory in
# proportion to their length.
BATCH_AUDIO_SECONDS = 240.0
CHUNK_SECONDS = 60.0


class Segment(NamedTuple):
    start: float  # seconds from the start of the recording
    end: float
    caption: str


@dataclass
class CaptionResult:
    caption: str
    # exp(log_prob / n_tokens): the geometric mean of the probabilities of the caption's tokens, its final <eos>
    # included, under the distribution decoding samples from (bans applied), in (0, 1]
    confidence: float
    alternatives: list[str]  # the n best captions, best first: alternatives[0] == caption
    start: float | None = None  # for a window of a recording (caption_segment_results): seconds from its start
    end: float | None = None


class CaptioningPipeline:
    """A loaded model file: audio encoder + captioner + tokenizer on one device."""

    def __init__(self, encoder, captioner, tokenizer, device):
        self.encoder = encoder.eval()
        self.captioner = captioner.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.sample_rate: int = encoder.sample_rate  # arrays passed to `caption` must be at this rate
        self.precision: str = getattr(captioner, "decoder_precision", "fp32")  # of the decoder's weights (quantize.py)

    @property
    def max_seconds(self) -> float:
        """The longest audio one caption can cover (the captioner's max_audio_frames); caption longer
        recordings in segments (`caption_segments`, `audiocap caption --segment`)."""
        return self.captioner.dims.max_audio_frames / self.encoder.frame_rate

    def caption(self, paths_or_arrays, beam_size: int = 3, batch_size: int = 8, **decoding_options) -> list[str]:
        """One caption per input: an audio file path, or a mono float waveform at `self.sample_rate`.
        `decoding_options` are further fields of decoding.DecodingOptions (e.g. max_length). Two defaults
        differ from the bare DecodingOptions, chosen on the default model's held-out clips (CIDEr-D 0.61
        -> 0.70): a content word is not repeated (a model trained on two-source captions otherwise
        writes "rain falls as rain falls"), and beams are ranked by log_prob / n_tokens ** 0.5.
        An input longer than `max_seconds` raises AudiocapError: use `caption_segments` for it.

        Arrays: 1-D (mono), numpy or torch; float samples are used as they are, integer PCM is scaled to
        [-1, 1) as soundfile reads it (int16 / 32768, int32 / 2 ** 31, uint8 -> (x - 128) / 128).
        An empty input, or one with NaN/inf samples, raises AudiocapError naming it (path, or input index)."""
        return [r.caption for r in self.caption_results(paths_or_arrays, beam_size, batch_size, **decoding_options)]

    def caption_results(
        self, paths_or_arrays, beam_size: int = 3, batch_size: int = 8, n_best: int = 1, **decoding_options,
    ) -> list[CaptionResult]:
        """As `caption`, with each caption's confidence and the `n_best` (at most `beam_size`) best captions."""
        check_decoding_sizes(beam_size, batch_size, n_best)
        inputs = as_input_list(paths_or_arrays)
        results = []
        for start in range(0, len(inputs), batch_size):
            batch = enumerate(inputs[start:start + batch_size], start)
            waveforms = [self.load(x, name=input_name(x, i)) for i, x in batch]
            results += self.caption_waveform_results(waveforms, beam_size, n_best, **decoding_options)
        return results

    def caption_segments(
        self, paths_or_arrays, segment_seconds: float = 10.0, beam_size: int = 3, batch_size: int = 8,
        **decoding_options,
    ) -> list[list[Segment]]:
        """Per input, the captions of its consecutive `segment_seconds` windows (a last piece shorter than
        half a window joins the window before it), for recordings of any length."""
        results = self.caption_segment_results(paths_or_arrays, segment_seconds, beam_size, batch_size,
                                               **decoding_options)
        return [[Segment(r.start, r.end, r.caption) for r in windows] for windows in results]

    def caption_segment_results(
        self, paths_or_arrays, segment_seconds: float = 10.0, beam_size: int = 3, batch_size: int = 8,
        n_best: int = 1, **decoding_options,
    ) -> list[list[CaptionResult]]:
        """As `caption_segments`, each window's caption with its start, end, confidence and n best captions."""
        self.check_segment(segment_seconds)
        check_decoding_sizes(beam_size, batch_size, n_best)
        results = []
        for i, x in enumerate(as_input_list(paths_or_arrays)):
            windows = list(self.segment_windows(x, segment_seconds, name=input_name(x, i)))
            window_results = []
            for start in range(0, len(windows), batch_size):
                pieces = [piece for _, _, piece, _ in windows[start:start + batch_size]]
                window_results += self.caption_waveform_results(pieces, beam_size, n_best, **decoding_options)
            for (a, b, _, _), result in zip(windows, window_results):
                result.start, result.end = a / self.sample_rate, b / self.sample_rate
            results.append(window_results)
        return results

    def segment_windows(self, path_or_array, segment_seconds: float, name: str | None = None):
        """(start, end, waveform, last?) of each window of `segment_bounds`, a file decoded one window at a time
        (memory does not grow with its length): a last piece shorter than half a window joins the one before."""
        step = max(1, round(segment_seconds * self.sample_rate))
        if isinstance(path_or_array, (str, Path)):
            name, pieces = display_path(path_or_array), stream_audio(path_or_array, self.sample_rate, step)
        else:
            waveform = self.load(path_or_array, check_length=False, name=name)
            pieces = (waveform[a:a + step] for a in range(0, len(waveform), step))
        start, previous = 0, None
        for piece in pieces:  # every piece is `step` long but the last
            if previous is not None and len(piece) < step / 2:
                yield start, start + len(previous) + len(piece), np.concatenate([previous, piece]), True
                return
            if previous is not None:
                yield start, start + len(previous), previous, False
                start += len(previous)
            previous = piece
        if previous is None:
            raise AudioLoadError(f"{name}: no audio samples")
        yield start, start + len(previous), previous, True

    def load(self, path_or_array, check_length: bool = True, name: str | None = None):
        """A mono float32 waveform at `self.sample_rate` from a path or an array (see `caption`); AudiocapError
        naming the input (`name`, default: its path) if it is empty, or longer than one caption can cover
        (and `check_length`)."""
        from_file = isinstance(path_or_array, (str, Path))
        name = name or (display_path(path_or_array) if from_file else "an array")
        try:  # a file too long is refused from its header, before it is decoded
            waveform = (load_audio(path_or_array, self.sample_rate, self.max_seconds if check_length else None)
                        if from_file else as_waveform(path_or_array, self.sample_rate, name))
        except AudioTooLongError as err:
            if check_length:
                self.check_length(round(err.seconds * self.sample_rate), name)
            raise
        if len(waveform) == 0:  # the model would still write a caption, of nothing
            raise AudioLoadError(f"{name}: no audio samples")
        if check_length:
            self.check_length(len(waveform), name)
        return waveform

    def check_length(self, n_samples: int, name) -> None:
        check_not_too_long({name: n_samples / self.sample_rate}, self.max_seconds,
                           f"this model captions at once ({self.max_seconds:.1f} s)",
                           "caption it in segments (`audiocap caption --segment 10`, `model.caption_segments`)")

    def check_segment(self, segment_seconds: float) -> None:
        """A window, and a last one up to 1.5 times as long (segment_bounds), must fit `max_seconds`."""
        if not 0 < segment_seconds <= self.max_seconds / 1.5:
            raise AudiocapError(f"segment length must be above 0 and at most {self.max_seconds / 1.5:.1f} s for "
                                f"this model (it captions {self.max_seconds:.1f} s at once), not {segment_seconds} s")

    def caption_waveforms(self, waveforms: list, beam_size: int = 3, **decoding_options) -> list[str]:
        """Caption mono waveforms (each (N_i,) at `self.sample_rate`), in padded batches of at most
        BATCH_AUDIO_SECONDS of audio."""
        return [r.caption for r in self.caption_waveform_results(waveforms, beam_size, **decoding_options)]

    def caption_waveform_results(
        self, waveforms: list, beam_size: int = 3, n_best: int = 1, **decoding_options,
    ) -> list[CaptionResult]:
        """As `caption_waveforms`, with confidences and the `n_best` best captions."""
        limit = int(BATCH_AUDIO_SECONDS * self.sample_rate)
        results, batch = [], []
        for waveform in waveforms:
            if batch and (len(batch) + 1) * max(len(waveform), *map(len, batch)) > limit:
                results += self.caption_batch(batch, beam_size, n_best, **decoding_options)
                batch = []
            batch.append(waveform)
        return results + (self.caption_batch(batch, beam_size, n_best, **decoding_options) if batch else [])

    def caption_batch(self, waveforms: list, beam_size: int = 3, n_best: int = 1,
                      **decoding_options) -> list[CaptionResult]:
        """Caption one batch of mono waveforms: encode each as if alone (a clip of more than CHUNK_SECONDS in
        chunks), pad the frames, then beam search."""
        with torch.inference_mode():
            clips = self.encoder.encode_clips(waveforms, CHUNK_SECONDS)  # (T_i, D) each, as if alone
            frames = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)  # (B, T, D)
            frame_lengths = torch.tensor([len(f) for f in clips], device=self.device)  # (B,)
            memory, memory_mask = self.captioner.encode(frames, frame_lengths)  # (B,T,d), (B,T)
            options = DecodingOptions(beam_size=beam_size, **{**USER_DECODING_DEFAULTS, **decoding_options})
            n_best_results = decode_n_best(self.captioner, memory, memory_mask, self.tokenizer, options, n_best)
        return [caption_result(clip_results) for clip_results in n_best_results]


def caption_result(n_best_results: list) -> CaptionResult:
    """A clip's CaptionResult from its decoding.DecodingResult list, best first."""
    best = n_best_results[0]
    return CaptionResult(caption=best.text, confidence=math.exp(best.log_prob / best.n_tokens),
                         alternatives=[r.text for r in n_best_results])


def as_input_list(paths_or_arrays) -> list:
    if isinstance(paths_or_arrays, (str, Path, np.ndarray, torch.Tensor)):
        return [paths_or_arrays]
    if isinstance(paths_or_arrays, (bytes, bytearray)):
        raise AudiocapError("inputs: got bytes; pass a file path as str or pathlib.Path (os.fsdecode(path)), "
                            "or a waveform as a numpy array")
    if not isinstance(paths_or_arrays, Iterable):
        raise AudiocapError(f"inputs: got {type(paths_or_arrays).__name__}; pass file paths or 1-D float arrays")
    inputs = list(paths_or_arrays)
    if inputs and all(isinstance(x, (int, float)) for x in inputs):  # a waveform as a list would be N inputs
        raise AudiocapError("inputs: got a list of numbers; pass a waveform as np.asarray(samples, np.float32)")
    return inputs


def input_name(path_or_array, index: int) -> str | None:
    """How errors name an input: a file by its path (None: `load` uses it), an array by its index."""
    return None if isinstance(path_or_array, (str, Path)) else f"input {index}"


def check_decoding_sizes(beam_size, batch_size, n_best=1) -> None:
    check_count(beam_size, "beam_size", MAX_BEAM_SIZE)
    check_count(batch_size, "batch_size")
    check_count(n_best, "n_best (captions kept per clip, at most beam_size)", beam_size)


def check_count(value, name: str, maximum: int | None = None) -> int:
    """`value` if it is a whole number from 1 to `maximum`, else AudiocapError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= (maximum or value):
        raise AudiocapError(f"{name} must be a whole number from 1 to {maximum}, not {value!r}" if maximum
                            else f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def segment_bounds(n_samples: int, segment_seconds: float, sample_rate: int) -> list[tuple[int, int]]:
    """[start, end) sample indices of consecutive windows of `segment_seconds` covering n_samples; a last
    piece shorter than half a window joins the window before it (a caption of a sliver says little)."""
    if segment_seconds <= 0:
        raise AudiocapError(f"segment length must be positive, not {segment_seconds} s")
    step = max(1, round(segment_seconds * sample_rate))
    starts = list(range(0, max(n_samples, 1), step))
    if len(starts) > 1 and n_samples - starts[-1] < step / 2:
        starts.pop()
    return [(a, b) for a, b in zip(starts, [*starts[1:], n_samples])]


def load_model(
    path: str | Path | None = None, device: str | None = None, precision: str = "auto"
) -> CaptioningPipeline:
    """Load a model file written by `audiocap train` (default: the model bundled with the package).

    `precision` of the decoder's weights (see audiocap.quantize): "fp32"; "fp16" (CPU: faster beam search,
    same captions as fp32 on the default model's held-out clips); "int8" (CPU: fastest for one clip at a
    time, changes a few captions; docs/BENCHMARKS.md, "Decoder precision"); "auto" = fp16 on a CPU that has the kernel, else fp32.
    The audio encoder and the transformer encoder always run in float32."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the model file `audiocap train` wrote in it "
                              f"(e.g. {path / 'model.safetensors'})")
    if not path.is_file():
        hint = ("this installation has no bundled default model; pass --model PATH (train one with "
                "`audiocap train configs/clotho_cnn10_rlssr.yaml`)") if path == DEFAULT_MODEL else "check --model"
        raise CheckpointError(f"{path}: model file not found; {hint}")
    device = resolve_device(device)
    precision = decoder_precision(precision, device)
    captioner, tokenizer, encoder = model_file.load_model_file(path)
    captioner = prepare_decoder(captioner.to(device), precision)
    return CaptioningPipeline(encoder.to(device), captioner, tokenizer, device)


def resolve_device(device: str | None = None):
    """torch.device for a user's `--device` (None: cuda if available, else cpu); AudiocapError naming the
    device and the choices this machine has, rather than torch's errors from deep inside."""
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device is None:
        return torch.device("cuda" if n_gpus else "cpu")
    choices = "cpu" + (f", cuda, cuda:0 ... cuda:{n_gpus - 1}" if n_gpus else " (this PyTorch sees no CUDA GPU)")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AudiocapError(f"unknown device {device!r}; choose {choices}") from None
    if parsed.type == "cpu" or (parsed.type == "cuda" and (parsed.index or 0) < n_gpus):
        return parsed
    raise AudiocapError(f"device {device!r} is not available here; choose {choices}")


def decoder_precision(precision: str, device) -> str:
    """The decoder-weight precision `load_model(..., precision)` uses on `device`."""
    if precision not in PRECISIONS:
        raise AudiocapError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cpu" and precision_available("fp16") else "fp32"
    if precision != "fp32" and device.type != "cpu":
        raise AudiocapError(f"precision {precision} is for CPU inference, not device {device}; use --precision fp32")
    if precision != "fp32" and not precision_available(precision):
        raise AudiocapError(f"precision {precision}: this PyTorch build has no CPU kernel for it; use --precision fp32")
    return precision
