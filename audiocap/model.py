"""The captioner of Koh, Xue & Chng (ICASSP 2022): audio-encoder frames -> linear projection ->
transformer encoder -> transformer decoder over words, plus the RLSSR reconstruction head.

Pre-LN residual attention blocks in the style of OpenAI whisper. Shapes: B batch, T audio frames,
L caption tokens, D_in audio-encoder dim, d = d_model, H heads, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiocap.tokenizer import Tokenizer


@dataclass
class ModelDimensions:
    n_audio_features: int  # D_in: the audio encoder's `dim`
    n_vocab: int  # V: len(tokenizer)
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 1024
    dropout: float = 0.1
    max_audio_frames: int = 2048  # longest frame sequence the positional table covers
    max_caption_tokens: int = 32  # <bos> + words the decoder can attend to
    tie_embeddings: bool = True  # output layer = word-embedding matrix transposed
    rlssr_hidden: int = 256  # width of the RLSSR head's hidden layer; 0 = no head (RLSSR off)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Transformer sinusoidal positional encodings, (length, channels)."""
    assert channels % 2 == 0
    log_timescale_increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, N, d) over the positions where mask (B, N) is True -> (B, d)."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MultiHeadAttention(nn.Module):
    """Keys/values are projected separately (`project_kv`) so callers can cache them explicitly."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)  # a key bias shifts all scores equally
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        # Inference only (quantize.prepare_decoder): query, key and value weights stacked in one layer, so a
        # decoding step reads them in one product instead of three.
        self.query_key_value: nn.Module | None = None

    def split_heads(self, x: Tensor) -> Tensor:  # (B, N, d) -> (B, H, N, d/H)
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """source (B, S, d) -> keys, values (B, H, S, d/H)."""
        return self.split_heads(self.key(source)), self.split_heads(self.value(source))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention: x (B, L, d) -> queries, keys, values (B, H, L, d/H)."""
        if self.query_key_value is None:
            return (self.split_heads(self.query(x)), *self.project_kv(x))
        return self.split_heads(self.query_key_value(x)).chunk(3, dim=-1)  # heads laid out as [q | k | v]

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, L, d) attends to keys/values (B_kv, H, S, d/H); mask broadcasts to (B_kv, H, L', S), True = may attend."""
        return self.attend(self.split_heads(self.query(x)), keys, values, mask)

    def attend(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """Queries q (B, H, L, d/H) -> output (B, L, d).

        B may be a multiple G of B_kv: then each run of G consecutive rows of q (the beams of one clip) shares
        one row of keys/values (the clip's memory), and its G*L queries attend to it in one row (L' = G*L), so
        beam search never copies the memory's keys/values per beam."""
        n_rows, n_tokens = q.shape[0], q.shape[2]
        shared = keys.shape[0] != n_rows
        if shared:
            q = q.unflatten(0, (keys.shape[0], -1)).transpose(1, 2).flatten(2, 3)  # (B_kv, H, G*L, d/H)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout)
        if shared:
            y = y.unflatten(2, (-1, n_tokens)).transpose(1, 2).flatten(0, 1)  # (B, H, L, d/H)
        return self.out(y.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: self-attention, [cross-attention to the audio memory], feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, cross_attention: bool = False):
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_attn_ln = nn.LayerNorm(d_model) if cross_attention else None
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout) if cross_attention else None
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,  # (B, L, d)
        mask: Tensor | None,  # self-attention mask, broadcastable to (B, H, L, S)
        memory_kv: tuple[Tensor, Tensor] | None = None,  # cross-attention keys/values (B_kv, H, T, d/H)
        memory_mask: Tensor | None = None,  # (B_kv, 1, 1, T)
        self_kv_cache: SelfAttentionCache | None = None,  # keys/values of earlier tokens; extended in place
    ) -> Tensor:
        queries, keys, values = self.attn.project_qkv(self.attn_ln(x))
        if self_kv_cache is not None:
            keys, values = self_kv_cache.extend(keys, values)
        x = x + self.residual_dropout(self.attn.attend(queries, keys, values, mask))
        if self.cross_attn is not None:
            x = x + self.residual_dropout(self.cross_attn(self.cross_attn_ln(x), *memory_kv, memory_mask))
        return x + self.residual_dropout(self.mlp(self.mlp_ln(x)))


class SelfAttentionCache:
    """One decoder layer's self-attention keys/values of the tokens so far, (N, H, L, d/H): views into the
    `KVCache` buffer, which is preallocated for `max_tokens` positions, so a step writes its own position
    instead of copying the whole history into a new tensor."""

    def __init__(self, cache: KVCache, layer: int):
        self.cache, self.layer = cache, layer
        self.length = 0

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new tokens' keys/values (N, H, L_new, d/H); return those of all tokens so far."""
        buffer = self.cache.self_attention_buffer(keys)  # (n_layers, 2, N, H, max_tokens, d/H)
        end = self.length + keys.shape[2]
        buffer[self.layer, 0, :, :, self.length : end] = keys
        buffer[self.layer, 1, :, :, self.length : end] = values
        self.length = end
        return buffer[self.layer, 0, :, :, :end], buffer[self.layer, 1, :, :, :end]


class KVCache:
    """What step-by-step decoding reuses: per decoder layer, the self-attention keys/values of the tokens
    decoded so far, and the cross-attention keys/values of the memory (B_kv, H, T, d/H) with its attention
    mask, computed on the first step (later steps ignore the memory passed in).

    The self-attention keys/values of all layers live in one tensor, so that reordering the beams after
    a step is one copy rather than two per layer: in beam search at batch 1, each small operation costs
    tens of microseconds after the step has streamed the decoder's weights through the caches.

    `AudioCaptioner.decode` fills it in place; with a cache, pass only the new tokens."""

    def __init__(self, n_layers: int, max_tokens: int):
        self.n_layers, self.max_tokens = n_layers, max_tokens
        self.buffer: Tensor | None = None  # (n_layers, 2, N, H, max_tokens, d/H), allocated on the first step
        self.self_attention = [SelfAttentionCache(self, layer) for layer in range(n_layers)]
        self.cross_attention: list[tuple[Tensor, Tensor]] = []  # filled on the first step
        self.memory_attn_mask: Tensor | None = None

    def self_attention_buffer(self, keys: Tensor) -> Tensor:
        if self.buffer is None:
            n_rows, n_heads, _, head_dim = keys.shape
            self.buffer = keys.new_empty(self.n_layers, 2, n_rows, n_heads, self.max_tokens, head_dim)
        return self.buffer

    @property
    def length(self) -> int:
        """Tokens already cached = position of the next token."""
        return self.self_attention[0].length

    def reorder_beams(self, source_rows: Tensor) -> None:
        """Row i continues the hypothesis of row source_rows[i] (N,). Beams only move within the rows of
        one audio clip, whose memory is the same, so the cross-attention keys/values stay as they are."""
        used = self.buffer[:, :, :, :, : self.length]  # the unused capacity is not worth copying
        used.copy_(used.index_select(2, source_rows))  # index_select: one gather, not advanced indexing's copy


class CaptionDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        d = dims.d_model
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        # GPT-2's init: with tied output weights, nn.Embedding's default (std 1) would start the
        # cross-entropy near 50 instead of near ln(V).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.empty(dims.max_caption_tokens, d).normal_(std=0.02))
        self.dropout = nn.Dropout(dims.dropout)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, dims.n_heads, dims.d_ff, dims.dropout, cross_attention=True)
            for _ in range(dims.n_decoder_layers)
        )
        self.ln = nn.LayerNorm(d)
        self.output = None if dims.tie_embeddings else nn.Linear(d, dims.n_vocab, bias=False)

    def forward(
        self, tokens: Tensor, memory: Tensor, memory_mask: Tensor, kv_cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor]:
        """tokens (B, L), memory (B, T, d), memory_mask (B, T) -> logits (B, L, V), hidden (B, L, d)."""
        offset = kv_cache.length if kv_cache is not None else 0
        n_tokens = tokens.shape[1]
        if offset + n_tokens > self.positional_embedding.shape[0]:
            raise ValueError(
                f"{offset + n_tokens} caption tokens exceed max_caption_tokens={self.positional_embedding.shape[0]}"
            )
        x = self.token_embedding(tokens) + self.positional_embedding[offset : offset + n_tokens]
        x = self.dropout(x)

        # Token i (at position offset+i) sees positions <= offset+i, so a single new token sees everything
        # and a decoding step needs no mask. Right-padded captions need no key-padding mask on top:
        # causality already hides every pad from every real token before it.
        causal_mask = None
        if n_tokens > 1:
            positions = torch.arange(offset + n_tokens, device=tokens.device)
            causal_mask = positions[None, :] <= (offset + torch.arange(n_tokens, device=tokens.device))[:, None]

        if kv_cache is None:
            memory_kv = [block.cross_attn.project_kv(memory) for block in self.blocks]
            memory_attn_mask = memory_mask[:, None, None, :]  # (B_kv, 1, 1, T)
        else:
            if not kv_cache.cross_attention:  # first step: the memory is projected once per clip
                # Contiguous copies, made once: attention over the heads' strided views of the projection
                # copies them internally at every step (~40 us per layer and step at batch 1).
                kv_cache.cross_attention = [
                    tuple(t.contiguous() for t in block.cross_attn.project_kv(memory)) for block in self.blocks
                ]
                # Without padding no mask is needed, and none lets attention skip the masking work; the check
                # costs a device sync, paid here once per caption rather than on every training step.
                kv_cache.memory_attn_mask = None if bool(memory_mask.all()) else memory_mask[:, None, None, :]
            memory_kv, memory_attn_mask = kv_cache.cross_attention, kv_cache.memory_attn_mask

        for i, block in enumerate(self.blocks):
            self_kv_cache = kv_cache.self_attention[i] if kv_cache is not None else None
            x = block(x, causal_mask, memory_kv[i], memory_attn_mask, self_kv_cache)

        hidden = self.ln(x)
        logits = F.linear(hidden, self.token_embedding.weight) if self.output is None else self.output(hidden)
        return logits, hidden


class FrameEncoder(nn.Module):
    """Audio-encoder frames (B, T, D_in) -> linear projection + sinusoids -> transformer -> memory (B, T, d)."""

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.projection = nn.Linear(dims.n_audio_features, dims.d_model)
        self.register_buffer("positional_embedding", sinusoids(dims.max_audio_frames, dims.d_model), persistent=False)
        self.dropout = nn.Dropout(dims.dropout)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(dims.d_model, dims.n_heads, dims.d_ff, dims.dropout)
            for _ in range(dims.n_encoder_layers)
        )
        self.ln_post = nn.LayerNorm(dims.d_model)

    def forward(self, frames: Tensor, frame_mask: Tensor) -> Tensor:
        n_frames = frames.shape[1]
        if n_frames > self.positional_embedding.shape[0]:
            raise ValueError(
                f"{n_frames} audio frames exceed max_audio_frames={self.positional_embedding.shape[0]}; "
                "caption shorter segments of the audio"
            )
        x = self.dropout(self.projection(frames) + self.positional_embedding[:n_frames])
        key_mask = frame_mask[:, None, None, :]  # (B, 1, 1, T): padded frames are never attended to
        for block in self.blocks:
            x = block(x, key_mask)
        return self.ln_post(x)


class ReconstructionHead(nn.Module):
    """RLSSR head: a 2-layer MLP mapping the pooled decoder latent to the encoder latent space."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, pooled_decoder_hidden: Tensor) -> Tensor:  # (B, d) -> (B, d)
        return self.mlp(pooled_decoder_hidden)


class AudioCaptioner(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.dims = dims
        self.encoder = FrameEncoder(dims)
        self.decoder = CaptionDecoder(dims)
        self.rlssr_head = ReconstructionHead(dims.d_model, dims.rlssr_hidden) if dims.rlssr_hidden > 0 else None

    def encode(self, frames: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """frames (B, T, D_in), frame_lengths (B,) -> memory (B, T, d), memory_mask (B, T) bool, True = valid."""
        memory_mask = torch.arange(frames.shape[1], device=frames.device)[None, :] < frame_lengths[:, None]
        return self.encoder(frames, memory_mask), memory_mask

    def decode(
        self, tokens: Tensor, memory: Tensor, memory_mask: Tensor, kv_cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor]:
        """tokens (B, L) -> logits (B, L, V), hidden (B, L, d). With `kv_cache`, `tokens` are only the new ones."""
        return self.decoder(tokens, memory, memory_mask, kv_cache)

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.dims.n_decoder_layers, self.dims.max_caption_tokens)

    def forward(self, frames: Tensor, frame_lengths: Tensor, tokens_in: Tensor, pad_id: int = 0) -> dict[str, Tensor]:
        """Teacher forcing. tokens_in (B, L) = <bos> w_1 .. w_n, right-padded with `pad_id`.

        Returns logits (B, L, V), decoder_hidden (B, L, d), memory (B, T, d), memory_mask (B, T),
        token_mask (B, L) (True = real token) and rlssr_reconstruction (B, d) (None without a head).
        The reconstruction is computed here, inside forward, so DDP sees the head's parameters."""
        memory, memory_mask = self.encode(frames, frame_lengths)
        logits, hidden = self.decode(tokens_in, memory, memory_mask)
        token_mask = tokens_in != pad_id
        reconstruction = None
        if self.rlssr_head is not None:
            reconstruction = self.rlssr_head(masked_mean(hidden, token_mask))
        return dict(
            logits=logits,
            decoder_hidden=hidden,
            memory=memory,
            memory_mask=memory_mask,
            token_mask=token_mask,
            rlssr_reconstruction=reconstruction,
        )


def rlssr_loss(
    reconstruction: Tensor, memory: Tensor, memory_mask: Tensor, distance: str = "l2", stop_gradient: bool = True
) -> Tensor:
    """Reconstruction Latent Space Similarity Regularization.

    With h_dec (B, L, d) the decoder's final hidden states, m_tok its real-token mask, h_enc (B, T, d) the
    encoder's memory and m_frm its valid-frame mask, per clip b:

        z_b = sum_l m_tok[b,l] h_dec[b,l] / sum_l m_tok[b,l]            pooled decoder latent
        r_b = W_2 GELU(W_1 z_b + c_1) + c_2                              reconstruction (AudioCaptioner.forward)
        t_b = sg( sum_t m_frm[b,t] h_enc[b,t] / sum_t m_frm[b,t] )     target; sg = stop-gradient if stop_gradient

        "l2": RLSSR = 1/B sum_b ||r_b - t_b||_2^2 / d
        "l1": RLSSR = 1/B sum_b ||r_b - t_b||_1 / d

    Training minimises CE + lambda * RLSSR. With stop_gradient the gradient reaches the decoder and the head
    only; without it, it also pulls the encoder latent towards the reconstruction.
    `reconstruction` = `forward(...)["rlssr_reconstruction"]` (B, d); memory (B, T, d); memory_mask (B, T).
    """
    target = masked_mean(memory, memory_mask)
    if stop_gradient:
        target = target.detach()
    difference = reconstruction.float() - target.float()
    if distance == "l2":
        return difference.pow(2).mean()
    if distance == "l1":
        return difference.abs().mean()
    raise ValueError(f"rlssr distance must be 'l1' or 'l2', not {distance!r}")


class CaptionLoss(NamedTuple):
    total: Tensor  # what training minimises
    cross_entropy: Tensor
    rlssr: Tensor | None  # None when RLSSR is off (weight 0)


def caption_loss(
    out: dict, tokens_out: Tensor, rlssr_weight: float = 1.0, label_smoothing: float = 0.0, rlssr_distance: str = "l2",
    rlssr_stop_gradient: bool = True, n_tokens: Tensor | float | None = None, clip_share: float = 1.0,
) -> CaptionLoss:
    """The paper's objective for one batch, from `out = captioner(frames, frame_lengths, tokens_in)` and the
    targets `tokens_out` (B, L) = `w1..wn <eos>` right-padded with Tokenizer.pad:

        CE    = sum over target tokens of -log p(token)  (label-smoothed)  / n_tokens
        RLSSR = rlssr_loss(reconstruction, memory, memory_mask)  · clip_share     (formula: rlssr_loss)
        total = CE + λ · RLSSR                                                     (λ = rlssr_weight)

    By default `n_tokens` is the batch's target tokens and `clip_share` 1: a mean per token and per clip.
    A training step made of several batches (gradient accumulation, DDP processes) passes the step's tokens
    per process and each batch's share of the step's clips, so that the step equals one of the combined batch.
    """
    logits = out["logits"].float().flatten(0, 1)
    ce = F.cross_entropy(logits, tokens_out.flatten(), ignore_index=Tokenizer.pad, label_smoothing=label_smoothing,
                         reduction="sum")
    ce = ce / (n_tokens if n_tokens is not None else (tokens_out != Tokenizer.pad).sum())
    if rlssr_weight == 0:
        return CaptionLoss(ce, ce, None)
    rlssr = rlssr_loss(out["rlssr_reconstruction"], out["memory"], out["memory_mask"], distance=rlssr_distance,
                       stop_gradient=rlssr_stop_gradient) * clip_share
    return CaptionLoss(ce + rlssr_weight * rlssr, ce, rlssr)
