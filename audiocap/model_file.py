"""The model file: everything needed to caption audio, in one safetensors file.

    tensors   "captioner.<name>"  AudioCaptioner state dict
              "encoder.<name>"    the audio encoder's state dict (front end included)
    metadata  format = "audiocap-model", format_version, audiocap_version, and JSON strings:
              dimensions (ModelDimensions), tokenizer (Tokenizer.to_dict), encoder (AudioEncoder.config),
              training (free-form: config, epoch, scores ...)

Weights may be stored as float16 (`half=True`) to halve the file; they load back into float32 modules.
safetensors is read without unpickling anything, so a model file cannot run code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from audiocap.version import __version__
from audiocap.encoders import AudioEncoder, encoder_from_config
from audiocap.errors import CheckpointError, first_few
from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.tokenizer import Tokenizer

FORMAT_NAME = "audiocap-model"
FORMAT_VERSION = 1
REWRITE = "re-run `audiocap train` to write it again, or copy the complete file"


class LoadedModel(NamedTuple):
    captioner: AudioCaptioner
    tokenizer: Tokenizer
    encoder: AudioEncoder


def save_model(
    path: str | Path,
    captioner: AudioCaptioner,
    tokenizer: Tokenizer,
    encoder: AudioEncoder,
    half: bool = False,
    training_info: dict | None = None,
) -> Path:
    """Write the model file atomically (a temporary file renamed into place): a crash never leaves half a file."""
    if hasattr(captioner, "decoder_precision"):
        raise ValueError(f"this captioner's decoder was prepared for inference with {captioner.decoder_precision} "
                         "weights (audiocap.quantize); save the model it was made from")
    if captioner.dims.n_vocab != tokenizer.n_vocab or captioner.dims.n_audio_features != encoder.dim:
        raise ValueError(
            f"captioner dims (n_vocab={captioner.dims.n_vocab}, n_audio_features={captioner.dims.n_audio_features}) "
            f"do not match the tokenizer ({tokenizer.n_vocab} words) and encoder (dim={encoder.dim})"
        )
    tensors = {}
    for prefix, module in (("captioner", captioner), ("encoder", encoder)):
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():  # a model of NaN writes no caption
                raise CheckpointError(f"{path}: not saved: weight {prefix}.{name} holds NaN or infinite values")
            if half and tensor.is_floating_point():
                tensor = tensor.half()
            tensors[f"{prefix}.{name}"] = tensor.contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "audiocap_version": __version__,
        "dimensions": json.dumps(asdict(captioner.dims)),
        "tokenizer": json.dumps(tokenizer.to_dict()),
        "encoder": json.dumps(encoder.config()),
        "training": json.dumps(training_info or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, partial, metadata=metadata)
        os.chmod(partial, 0o644)  # safetensors writes owner-only files; a shared model should be readable
        os.replace(partial, path)
    except Exception as err:  # a full disk: safetensors raises its own error type; no partial file stays
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write the model file ({_short(str(err))}); free space or "
                              "choose another path") from None
    return path


def read_model_info(path: str | Path) -> dict:
    """The metadata of a model file, JSON fields parsed, without reading the weights."""
    return _read_model_header(Path(path))[1]


def _read_model_header(path: Path) -> tuple[dict, dict]:
    """(safetensors header, parsed metadata) of an audiocap model file; CheckpointError for anything else."""
    header = _read_safetensors_header(path)
    metadata = header.get("__metadata__", {})
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not an audiocap model file (a safetensors file without audiocap metadata); "
            "pass a file written by `audiocap train`"
        )
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: model file format version {_short(version)} is not supported by audiocap {__version__} "
            f"(it reads version {FORMAT_VERSION}); install the audiocap version that wrote it "
            f"({_short(metadata.get('audiocap_version', 'unknown'))}) or retrain"
        )
    try:
        info = {
            "format_version": int(version),
            "audiocap_version": metadata.get("audiocap_version"),
            **{key: json.loads(metadata[key]) for key in ("dimensions", "tokenizer", "encoder", "training")},
        }
    except (KeyError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{path}: model file metadata is damaged ({_short(repr(error))}); {REWRITE}") from None
    if not all(isinstance(info[key], dict) for key in ("dimensions", "tokenizer", "encoder", "training")):
        raise CheckpointError(f"{path}: model file metadata is damaged (a field is not a JSON object); {REWRITE}")
    return header, info


def load_model_file(path: str | Path) -> LoadedModel:
    """(captioner, tokenizer, encoder) on the CPU in eval mode; any problem -> CheckpointError naming the file.

    Nothing is allocated before the metadata's sizes agree with the tensors the header lists (the model is first
    built on the meta device) and lie within sane bounds: a small file cannot make loading take gigabytes."""
    path = Path(path)
    header, info = _read_model_header(path)
    dims = checked_dimensions(path, info["dimensions"])
    encoder_config = info["encoder"]
    try:
        tokenizer = Tokenizer.from_dict(info["tokenizer"])
        with torch.device("meta"):
            expected = {**_prefixed(AudioCaptioner(dims), "captioner."),
                        **_prefixed(encoder_from_config(encoder_config), "encoder.")}
    except CheckpointError:
        raise
    except Exception as error:  # a mismatch between metadata and weights: the file is inconsistent
        raise CheckpointError(f"{path}: model file cannot be rebuilt ({_short(str(error))}); {REWRITE}") from None
    if dims.n_vocab != tokenizer.n_vocab:
        raise CheckpointError(f"{path}: tokenizer has {tokenizer.n_vocab} words but the model {dims.n_vocab}; {REWRITE}")
    _check_shapes(path, header, expected)
    try:
        tensors = load_file(path)
        captioner = AudioCaptioner(dims)
        captioner.load_state_dict(_with_prefix(tensors, "captioner."))
        encoder = encoder_from_config(encoder_config, _with_prefix(tensors, "encoder."))
    except Exception as error:
        raise CheckpointError(f"{path}: model file cannot be rebuilt ({_short(str(error))}); {REWRITE}") from None
    return LoadedModel(captioner.eval(), tokenizer, encoder.eval())


# Bounds on the metadata's sizes, far above any captioner (the largest transformer layers are ~12k wide).
DIMENSION_LIMITS = {"n_audio_features": 1 << 14, "n_vocab": 1 << 20, "d_model": 1 << 14, "n_heads": 1 << 8,
                    "n_encoder_layers": 256, "n_decoder_layers": 256, "d_ff": 1 << 16, "max_audio_frames": 1 << 20,
                    "max_caption_tokens": 1 << 14, "rlssr_hidden": 1 << 16}
MAX_POSITION_TABLE = 1 << 26  # max_audio_frames × d_model floats (256 MB): the one table not stored in the file


def checked_dimensions(path: Path, dimensions: dict) -> ModelDimensions:
    """ModelDimensions from a file's metadata if every field has its type and a sane size, else CheckpointError."""
    fields = {f.name: f for f in dataclasses.fields(ModelDimensions)}
    problems = [f"unknown field {_short(name)}" for name in dimensions if name not in fields]
    for name, limit in DIMENSION_LIMITS.items():
        value = dimensions.get(name, fields[name].default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            problems.append(f"{name}={_short(repr(value))} (a whole number up to {limit})")
    dropout, tie = dimensions.get("dropout", 0.0), dimensions.get("tie_embeddings", True)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        problems.append(f"dropout={_short(repr(dropout))}")
    if not isinstance(tie, bool):
        problems.append(f"tie_embeddings={_short(repr(tie))}")
    if not problems:
        d_model, frames = dimensions.get("d_model", fields["d_model"].default), dimensions.get("max_audio_frames", 0)
        if frames * d_model > MAX_POSITION_TABLE:
            problems.append(f"max_audio_frames × d_model = {frames * d_model} (at most {MAX_POSITION_TABLE})")
    if problems:
        raise CheckpointError(f"{path}: model file dimensions are damaged or absurd ({', '.join(problems[:4])}); {REWRITE}")
    try:
        return ModelDimensions(**dimensions)
    except TypeError as error:  # a required field missing
        raise CheckpointError(f"{path}: model file dimensions are incomplete ({error}); {REWRITE}") from None


def _prefixed(module: torch.nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {prefix + name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _check_shapes(path: Path, header: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """The header's tensors must be exactly the model's, shape for shape, before any weight is read."""
    stored = {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    problems = [f"missing {name}" for name in expected if name not in stored]
    problems += [f"unexpected {name}" for name in stored if name not in expected]
    problems += [f"{name} {stored[name]} != {shape}" for name, shape in expected.items()
                 if name in stored and stored[name] != shape]
    if problems:
        raise CheckpointError(f"{path}: model file weights do not match its metadata ({_short(first_few(problems, 3))}); "
                              f"{REWRITE}")


def _short(text, limit: int = 200) -> str:
    """A value from a file, cut for an error message (a damaged header can hold megabytes)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


def _read_safetensors_header(path: Path) -> dict:
    """Parse the header ourselves so a wrong or truncated file gets a message that says which it is.

    Layout: 8-byte little-endian header length n, n bytes of JSON ({name: {dtype, shape, data_offsets}},
    "__metadata__": {str: str}), then the tensor data, whose size the largest end offset gives."""
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            header_size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            header_bytes = f.read(min(header_size, file_size, MAX_HEADER_BYTES))
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder; pass the model file in it") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: model file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the model file ({err.strerror})") from None
    if header_bytes[:1] != b"{" or header_size > MAX_HEADER_BYTES:  # every safetensors header is a JSON object
        raise CheckpointError(f"{path}: not a safetensors model file; pass a model file written by `audiocap train`")
    if len(header_bytes) < header_size:
        raise CheckpointError(f"{path}: model file is truncated (its header is cut off); {REWRITE}")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: not a safetensors model file (unreadable header); {REWRITE}") from None
    if problem := _header_problem(header):
        raise CheckpointError(f"{path}: not a valid safetensors header ({_short(problem)}); {REWRITE}")
    data_size = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    expected = 8 + header_size + data_size
    if file_size < expected:
        raise CheckpointError(f"{path}: model file is truncated ({file_size} of {expected} bytes); {REWRITE}")
    return header


def _header_problem(header) -> str | None:
    """What makes `header` not a safetensors header (its types), or None."""
    if not isinstance(header, dict):
        return f"a JSON {type(header).__name__}, not an object"
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "__metadata__ is not a map of strings"
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
            return f"tensor {name}: no dtype"
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            return f"tensor {name}: shape {shape!r}"
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(n) is int for n in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            return f"tensor {name}: data_offsets {offsets!r}"
    return None
