"""The decoder prepared for inference: stacked self-attention projections, and compact weights for CPU
inference: float16 (the CPU default) or int8.

Beam search runs the decoder once per word, and each step multiplies every decoder weight matrix by only
a few rows (clips x beams). On a CPU such a step is bound by reading the weights from memory, not by
arithmetic: the Clotho recipe's decoder (2 layers, d_model 256, 4.5k words) reads 4.0 M weights, 16 MB
in float32, again at every step (13.3 M, 53 MB at 512-d with 3 layers). Smaller weights are read faster:

* "fp16": weights stored as float16, activations and sums in float32 (FBGEMM's fp16 GEMM). Half the
  bytes; a weight's rounding error is 2^-11 of its size. The default model gave the same caption as
  in float32 on all 100 held-out clips.
* "int8": weights as int8 with one scale per output row, activations rounded to bfloat16 for the
  kernel. A quarter of the bytes, fastest for one clip at a time, slower than float32 for 16 clips
  (the kernel is built for few rows); a few captions in 100 change (docs/BENCHMARKS.md,
  "Decoder precision").

Only weights are compressed, never activations with a scale shared across rows, so a clip's caption
does not depend on the other clips of its batch. (Dynamic activation quantization, as in
`torch.ao.quantization.quantize_dynamic`, shares one scale per batch: it changed 6 of 100 captions
between batch sizes 1 and 16.) The audio encoder and the transformer encoder run once per clip over
many frames, are bound by arithmetic, and stay in float32.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from audiocap.model import AudioCaptioner, MultiHeadAttention


class Float16Linear(nn.Module):
    """y = x W^T + b with W (N, K) stored as float16 in FBGEMM's packed layout; x, y float32."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.packed = torch.ops.quantized.linear_prepack_fp16(
            weight.detach().float(), None if bias is None else bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 (N, K) times a bfloat16 scale per row (N,)."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        weight = weight.detach().float()
        # Round the scale to bfloat16 first and quantize with the rounded scale: int8 * scale is then the
        # nearest weight the kernel can represent.
        scale = (weight.abs().amax(dim=1).clamp(min=1e-30) / 127).to(torch.bfloat16)  # (N,)
        self.register_buffer("weight", torch.round(weight / scale.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (M, K)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scale)  # (M, N) bfloat16
        # bfloat16 + float32 bias promotes to float32 in one operation: the same values as converting first
        y = y.to(x.dtype) if self.bias is None else torch.add(self.bias, y)
        return y.unflatten(0, x.shape[:-1])


def float32_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An inference-only nn.Linear holding `weight` (N, K) and `bias` (N,) as they are."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")  # no random init
    layer.weight = nn.Parameter(weight.detach(), requires_grad=False)
    layer.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
    return layer


COMPACT_LINEAR = {"fp32": float32_linear, "fp16": Float16Linear, "int8": Int8Linear}


def precision_available(precision: str) -> bool:
    """Whether this PyTorch build has the CPU kernel for `precision` (a tiny probe: these are FBGEMM and
    private ATen kernels, present in x86 builds, not promised everywhere)."""
    if precision == "fp32":
        return True
    try:
        return COMPACT_LINEAR[precision](torch.ones(8, 32), torch.zeros(8))(torch.ones(2, 32)).shape == (2, 8)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def stacked_query_key_value(attention: MultiHeadAttention) -> tuple[Tensor, Tensor]:
    """The self-attention's query, key and value weights as one (3d, d) matrix and bias (3d,), stacked per
    head ([q_h | k_h | v_h] for h = 1..H), so `split_heads` of its output followed by `chunk(3)` gives the
    queries, keys and values (MultiHeadAttention.project_qkv)."""
    heads = attention.n_heads
    weights = [layer.weight.detach() for layer in (attention.query, attention.key, attention.value)]
    biases = [attention.query.bias.detach(), torch.zeros_like(attention.query.bias), attention.value.bias.detach()]
    weight = torch.stack([w.unflatten(0, (heads, -1)) for w in weights], dim=1).flatten(0, 2)  # (3d, d)
    bias = torch.stack([b.unflatten(0, (heads, -1)) for b in biases], dim=1).flatten()  # (3d,)
    return weight, bias


def prepare_decoder(captioner: AudioCaptioner, precision: str) -> AudioCaptioner:
    """Prepare the decoder for inference, in place; returns `captioner`. Each self-attention's query, key
    and value layers become one stacked layer (one product per decoding step instead of three), and every
    Linear layer of the decoder, and its output projection, holds `precision` weights: "fp32" (as
    trained; any device), "fp16" or "int8" (CPU). The result has no gradients, and
    `model_file.save_model` refuses it (save the model as trained instead)."""
    if precision not in COMPACT_LINEAR:
        raise ValueError(f"precision must be one of {', '.join(COMPACT_LINEAR)}, not {precision!r}")
    linear = COMPACT_LINEAR[precision]
    decoder = captioner.decoder
    for block in decoder.blocks:
        attention = block.attn
        attention.query_key_value = linear(*stacked_query_key_value(attention))
        attention.query = attention.key = attention.value = None  # replaced by the stacked layer
    for module in list(decoder.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear and precision != "fp32":
                setattr(module, name, linear(child.weight, child.bias))
    if decoder.output is None:  # tied weights: the output projection gets its own copy of the embeddings
        decoder.output = linear(decoder.token_embedding.weight, None)
    captioner.decoder_precision = precision
    return captioner
