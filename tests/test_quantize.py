"""Compact decoder weights (audiocap.quantize): fp16 gives float32's captions, int8 nearly; neither makes a
clip's caption depend on its batch; only the decoder changes; a compact model is never saved as float."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from audiocap.decoding import DecodingOptions, decode
from audiocap.model import AudioCaptioner, ModelDimensions
from audiocap.quantize import prepare_decoder, precision_available
from tests.conftest import TOKENIZER, encoded_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def needs_kernel(precision: str, *values) -> pytest.param:
    return pytest.param(precision, *values, marks=pytest.mark.skipif(
        not precision_available(precision), reason=f"this PyTorch build has no {precision} CPU kernel"))


COMPACT = [needs_kernel("fp16"), needs_kernel("int8")]


def random_model() -> AudioCaptioner:
    torch.manual_seed(0)
    dims = ModelDimensions(n_audio_features=8, n_vocab=300, d_model=64, n_heads=4, d_ff=256, dropout=0.0,
                           rlssr_hidden=0)
    return AudioCaptioner(dims).eval()


@pytest.mark.parametrize("precision", COMPACT)
def test_only_the_decoder_is_compacted(trained_model, precision):
    compact = prepare_decoder(copy.deepcopy(trained_model), precision)
    float_linears = [name for name, m in compact.named_modules() if isinstance(m, nn.Linear)]
    assert float_linears and all(not name.startswith("decoder.") for name in float_linears), float_linears
    assert compact.decoder.output is not None  # the tied output projection got its own compact copy
    assert trained_model.decoder.output is None  # ... and the original is untouched


@pytest.mark.parametrize("precision, tolerance, agreement", [("fp32", 1e-5, 1.0), needs_kernel("fp16", 1e-3, 0.95),
                                                             needs_kernel("int8", 0.05, 0.75)])
def test_logits_track_float32(precision, tolerance, agreement):
    model = random_model()
    compact = prepare_decoder(copy.deepcopy(model), precision)
    frames, lengths = torch.randn(2, 20, 8), torch.tensor([20, 13])
    tokens = torch.randint(4, 300, (2, 10))
    with torch.inference_mode():
        memory, mask = model.encode(frames, lengths)
        reference = model.decode(tokens, memory, mask)[0]
        logits = compact.decode(tokens, memory, mask)[0]
    error = (logits - reference).abs().mean() / reference.std()
    # fp32 (stacked query/key/value only): rounding; fp16 weights: ~1e-4 of the logits' spread, int8: ~2e-2;
    # a wrong layer, a transposed weight or a mis-stacked head: ~1
    assert error < tolerance, error
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= agreement  # an untrained model's near-ties


@pytest.mark.parametrize("precision", ["fp32", *COMPACT])
def test_a_clip_is_decoded_alike_in_any_batch(precision):
    model = prepare_decoder(random_model(), precision)
    memory, mask = model.encode(torch.randn(5, 20, 8), torch.tensor([20, 13, 20, 7, 16]))
    options = DecodingOptions(beam_size=3, max_length=8)
    together = decode(model, memory, mask, TOKENIZER_300, options)
    alone = [decode(model, memory[i:i + 1], mask[i:i + 1], TOKENIZER_300, options)[0] for i in range(5)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]


@pytest.mark.parametrize("precision", ["fp32", *COMPACT])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_captions_equal_float32_on_a_trained_model(trained_model, precision, beam_size):
    memory, mask = encoded_batch(trained_model)
    options = DecodingOptions(beam_size=beam_size)
    reference = decode(trained_model, memory, mask, TOKENIZER, options)
    results = decode(prepare_decoder(copy.deepcopy(trained_model), precision), memory, mask, TOKENIZER, options)
    assert [r.text for r in results] == [r.text for r in reference]
    assert [r.log_prob for r in results] == pytest.approx([r.log_prob for r in reference], abs=0.05)


@pytest.mark.parametrize("precision", ["fp32", *COMPACT])
def test_self_attention_reads_one_stacked_layer(precision):
    model = prepare_decoder(random_model(), precision)
    for block in model.decoder.blocks:
        assert block.attn.query_key_value is not None and block.attn.query is None
        assert block.cross_attn.query_key_value is None  # cross-attention: keys/values come from the memory
    float_model = random_model()
    memory, mask = float_model.encode(torch.randn(2, 20, 8), torch.tensor([20, 13]))
    tokens = torch.randint(4, 300, (2, 6))
    with torch.inference_mode():  # token by token through the KV cache, as in decoding
        cache, float_cache = model.new_kv_cache(), float_model.new_kv_cache()
        steps = [model.decode(tokens[:, i:i + 1], memory, mask, cache)[0] for i in range(6)]
        float_steps = [float_model.decode(tokens[:, i:i + 1], memory, mask, float_cache)[0] for i in range(6)]
    tolerance = {"fp32": 1e-5, "fp16": 1e-2, "int8": 0.5}[precision]
    torch.testing.assert_close(torch.cat(steps, 1), torch.cat(float_steps, 1), rtol=0, atol=tolerance)


def test_a_prepared_model_is_not_saved(trained_model, tmp_path):
    from audiocap.encoders import create_encoder
    from audiocap.model_file import save_model

    compact = trained_model
    compact.decoder_precision = "fp16"  # what prepare_decoder marks; save_model must refuse before anything else
    try:
        with pytest.raises(ValueError, match="prepared for inference with fp16"):
            save_model(tmp_path / "m.safetensors", compact, TOKENIZER, create_encoder("scratch-cnn10"))
    finally:
        del compact.decoder_precision
    assert not (tmp_path / "m.safetensors").exists()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_decoder(random_model(), "int4")


TOKENIZER_300 = type(TOKENIZER)(f"word{i}" for i in range(296))  # random_model's 300 entries
