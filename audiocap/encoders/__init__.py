"""Pretrained audio encoders (PANNs, aisfx) behind one interface: see `base.AudioEncoder`."""
from audiocap.encoders.base import AudioEncoder, create_encoder, list_encoders, register_encoder

__all__ = ["AudioEncoder", "create_encoder", "list_encoders", "register_encoder"]
