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
from audiocap.errors import CheckpointError
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
    save_file(tensors, partial, metadata=metadata)
    os.chmod(partial, 0o644)  # safetensors writes owner-only files; a shared model should be readable
    os.replace(partial, path)
    return path


def read_model_info(path: str | Path) -> dict:
    """The metadata of a model file, JSON fields parsed, without reading the weights."""
    path = Path(path)
    metadata = _read_safetensors_header(path).get("__metadata__", {})
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not an audiocap model file (a safetensors file without audiocap metadata); "
            "pass a file written by `audiocap train`"
        )
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: model file format version {version} is not supported by audiocap {__version__} "
            f"(it reads version {FORMAT_VERSION}); install the audiocap version that wrote it "
            f"({metadata.get('audiocap_version', 'unknown')}) or retrain"
        )
    try:
        return {
            "format_version": int(version),
            "audiocap_version": metadata.get("audiocap_version"),
            **{key: json.loads(metadata[key]) for key in ("dimensions", "tokenizer", "encoder", "training")},
        }
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: model file metadata is damaged ({error!r}); {REWRITE}") from None


def load_model_file(path: str | Path) -> LoadedModel:
    """(captioner, tokenizer, encoder) on the CPU in eval mode; any problem -> CheckpointError naming the file."""
    path = Path(path)
    info = read_model_info(path)
    try:
        tensors = load_file(path)
        dims = ModelDimensions(**info["dimensions"])
        tokenizer = Tokenizer.from_dict(info["tokenizer"])
        captioner = AudioCaptioner(dims)
        captioner.load_state_dict(_with_prefix(tensors, "captioner."))
        encoder = encoder_from_config(info["encoder"], _with_prefix(tensors, "encoder."))
    except CheckpointError:
        raise
    except Exception as error:  # a mismatch between metadata and weights: the file is inconsistent
        raise CheckpointError(f"{path}: model file cannot be rebuilt ({error}); {REWRITE}") from None
    if dims.n_vocab != tokenizer.n_vocab:
        raise CheckpointError(f"{path}: tokenizer has {tokenizer.n_vocab} words but the model {dims.n_vocab}; {REWRITE}")
    return LoadedModel(captioner.eval(), tokenizer, encoder.eval())


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def _read_safetensors_header(path: Path) -> dict:
    """Parse the header ourselves so a wrong or truncated file gets a message that says which it is.

    Layout: 8-byte little-endian header length n, n bytes of JSON ({name: {dtype, shape, data_offsets}},
    "__metadata__": {str: str}), then the tensor data, whose size the largest end offset gives."""
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    file_size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        header_size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        header_bytes = f.read(min(header_size, file_size))
    if header_bytes[:1] != b"{":  # every safetensors header is a JSON object
        raise CheckpointError(f"{path}: not a safetensors model file; pass a model file written by `audiocap train`")
    if len(header_bytes) < header_size:
        raise CheckpointError(f"{path}: model file is truncated (its header is cut off); {REWRITE}")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors model file (unreadable header); {REWRITE}") from None
    data_size = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    expected = 8 + header_size + data_size
    if file_size < expected:
        raise CheckpointError(f"{path}: model file is truncated ({file_size} of {expected} bytes); {REWRITE}")
    return header
