import pytest
import torch

from audiocap.model import AudioCaptioner, ModelDimensions, rlssr_loss


def tiny_dims(**overrides) -> ModelDimensions:
    settings = dict(n_audio_features=12, n_vocab=23, d_model=16, n_heads=2, d_ff=32, dropout=0.0,
                    max_audio_frames=64, max_caption_tokens=10, rlssr_hidden=8)
    return ModelDimensions(**{**settings, **overrides})


@pytest.fixture
def model() -> AudioCaptioner:
    torch.manual_seed(0)
    return AudioCaptioner(tiny_dims()).eval()


def batch():
    torch.manual_seed(1)
    frames = torch.randn(2, 9, 12)
    frame_lengths = torch.tensor([9, 5])
    tokens_in = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]])
    return frames, frame_lengths, tokens_in


def test_forward_shapes_and_masks(model):
    frames, frame_lengths, tokens_in = batch()
    out = model(frames, frame_lengths, tokens_in)
    assert out["logits"].shape == (2, 5, 23)
    assert out["decoder_hidden"].shape == (2, 5, 16)
    assert out["memory"].shape == (2, 9, 16)
    assert out["memory_mask"].tolist() == [[True] * 9, [True] * 5 + [False] * 4]
    assert out["token_mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert out["rlssr_reconstruction"].shape == (2, 16)


def test_padding_changes_nothing(model):
    frames, frame_lengths, tokens_in = batch()
    out = model(frames, frame_lengths, tokens_in)
    # clip 1 alone, without its padded frames and pad tokens
    alone = model(frames[1:, :5], frame_lengths[1:], tokens_in[1:, :3])
    torch.testing.assert_close(out["memory"][1, :5], alone["memory"][0])
    torch.testing.assert_close(out["logits"][1, :3], alone["logits"][0])
    torch.testing.assert_close(out["rlssr_reconstruction"][1], alone["rlssr_reconstruction"][0])


def test_decoder_is_causal(model):
    frames, frame_lengths, tokens_in = batch()
    changed = tokens_in.clone()
    changed[:, 3] = 4
    a, b = model(frames, frame_lengths, tokens_in)["logits"], model(frames, frame_lengths, changed)["logits"]
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[0, 3:], b[0, 3:])


def test_kv_cache_matches_full_recomputation(model):
    frames, frame_lengths, tokens_in = batch()
    memory, memory_mask = model.encode(frames, frame_lengths)
    full_logits, full_hidden = model.decode(tokens_in, memory, memory_mask)
    cache = model.new_kv_cache()
    first, _ = model.decode(tokens_in[:, :2], memory, memory_mask, cache)  # a prefix, then token by token
    steps = [first] + [model.decode(tokens_in[:, i : i + 1], memory, memory_mask, cache)[0] for i in range(2, 5)]
    assert cache.length == 5
    torch.testing.assert_close(torch.cat(steps, dim=1), full_logits, rtol=1e-5, atol=1e-5)


def test_tied_and_untied_output_layer():
    tied, untied = AudioCaptioner(tiny_dims()), AudioCaptioner(tiny_dims(tie_embeddings=False))
    assert tied.decoder.output is None
    assert untied.decoder.output.weight.shape == (23, 16)
    frames, frame_lengths, tokens_in = batch()
    assert untied(frames, frame_lengths, tokens_in)["logits"].shape == (2, 5, 23)


def test_length_limits_raise_clear_errors(model):
    frames, frame_lengths, _ = batch()
    with pytest.raises(ValueError, match="max_caption_tokens"):
        model(frames, frame_lengths, torch.ones(2, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="max_audio_frames"):
        model.encode(torch.randn(1, 65, 12), torch.tensor([65]))


def test_rlssr_loss_matches_hand_computation():
    reconstruction = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    memory = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]],
                           [[4.0, -2.0], [9.0, 9.0], [9.0, 9.0]]])
    memory_mask = torch.tensor([[True, True, False], [True, False, False]])
    # targets: clip 0 mean of 2 valid frames = (2, 2); clip 1 its one valid frame = (4, -2)
    # differences: (-1, 0) and (-4, 2)
    assert rlssr_loss(reconstruction, memory, memory_mask, "l2").item() == pytest.approx((1 + 0 + 16 + 4) / 4)
    assert rlssr_loss(reconstruction, memory, memory_mask, "l1").item() == pytest.approx((1 + 0 + 4 + 2) / 4)
    with pytest.raises(ValueError, match="l1"):
        rlssr_loss(reconstruction, memory, memory_mask, "cosine")


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_rlssr_gradient_reaches_the_target_only_without_stop_gradient(stop_gradient):
    reconstruction = torch.randn(2, 4, requires_grad=True)
    memory = torch.randn(2, 3, 4, requires_grad=True)
    memory_mask = torch.tensor([[True, True, True], [True, False, False]])
    rlssr_loss(reconstruction, memory, memory_mask, stop_gradient=stop_gradient).backward()
    assert reconstruction.grad.abs().sum() > 0
    if stop_gradient:
        assert memory.grad is None
    else:  # only valid frames receive gradient
        assert memory.grad[memory_mask].abs().sum() > 0
        assert memory.grad[~memory_mask].abs().sum() == 0


def test_rlssr_trains_head_decoder_and_encoder():
    torch.manual_seed(0)
    model = AudioCaptioner(tiny_dims())
    out = model(*batch())
    rlssr_loss(out["rlssr_reconstruction"], out["memory"], out["memory_mask"]).backward()
    for parameter in (model.rlssr_head.mlp[0].weight, model.decoder.blocks[0].attn.query.weight,
                      model.decoder.token_embedding.weight,
                      model.encoder.projection.weight):  # reached through cross-attention, not the target
        assert parameter.grad.abs().sum() > 0


def test_rlssr_off_builds_no_head():
    model = AudioCaptioner(tiny_dims(rlssr_hidden=0))
    assert model.rlssr_head is None
    assert not any(name.startswith("rlssr") for name in model.state_dict())
    assert model(*batch())["rlssr_reconstruction"] is None


def test_beams_share_their_clips_memory(model):
    """Memory with one row per clip serves G consecutive token rows each (the beams), as if repeated."""
    frames, frame_lengths, tokens_in = batch()
    memory, memory_mask = model.encode(frames, frame_lengths)
    beams = tokens_in.repeat_interleave(3, dim=0)
    beams[1::3, 2:] = 4  # the beams of a clip differ
    repeated, _ = model.decode(beams, memory.repeat_interleave(3, dim=0), memory_mask.repeat_interleave(3, dim=0))
    shared, _ = model.decode(beams, memory, memory_mask)
    torch.testing.assert_close(shared, repeated)
    cache = model.new_kv_cache()
    steps = [model.decode(beams[:, i : i + 1], memory, memory_mask, cache)[0] for i in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), repeated, rtol=1e-5, atol=1e-5)


def test_kv_cache_reorder_beams_continues_the_chosen_rows(model):
    frames, frame_lengths, tokens_in = batch()
    memory, memory_mask = model.encode(frames, frame_lengths)
    memory, memory_mask = memory[[1, 1]], memory_mask[[1, 1]]  # two beams of one clip
    cache = model.new_kv_cache()
    model.decode(tokens_in[:, :3], memory, memory_mask, cache)
    cache.reorder_beams(torch.tensor([1, 1]))  # both rows continue row 1's prefix
    logits, _ = model.decode(tokens_in[:, 3:4], memory, memory_mask, cache)
    prefix = torch.cat([tokens_in[[1, 1], :3], tokens_in[:, 3:4]], dim=1)
    expected, _ = model.decode(prefix, memory, memory_mask)
    torch.testing.assert_close(logits[:, 0], expected[:, -1], rtol=1e-5, atol=1e-5)
