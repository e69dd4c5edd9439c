"""Captions with confidences and n-best alternatives: `CaptioningPipeline.caption_results`, `decode_n_best` and
`audiocap caption --n-best K`, on real recordings with the bundled model.

The confidence is checked against the captioner run independently: the caption's tokens are fed to it
in one teacher-forced pass (no cache, no beam search), the bans that decoding applies are applied by hand,
and the geometric mean of the token probabilities is recomputed from its logits.
"""
from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

import audiocap
from audiocap.cli import main
from audiocap.decoding import STOPWORDS, DecodingOptions, decode, decode_n_best
from audiocap.caption import CHUNK_SECONDS, USER_DECODING_DEFAULTS, CaptionResult


@pytest.fixture(scope="module")
def model():
    return audiocap.load_model(device="cpu")  # the bundled model


@pytest.fixture(scope="module")
def clips(shared_data) -> list:
    """Real recordings: three ESC-50 clips (5 s) and a Clotho clip (15-30 s)."""
    esc50 = sorted((shared_data / "esc50" / "audio").glob("*.flac"))
    return [esc50[0], esc50[150], esc50[300], sorted((shared_data / "clotho" / "audio" / "validation").glob("*.wav"))[0]]


@pytest.fixture(scope="module")
def n_best_results(model, clips) -> list[CaptionResult]:
    return model.caption_results(clips, beam_size=4, n_best=4)


def encoded(model, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """The captioner's memory (1, T, d) and mask of one clip."""
    with torch.inference_mode():
        frames = model.encoder.encode_clips([model.load(clip)], CHUNK_SECONDS)[0]
        return model.captioner.encode(frames[None], torch.tensor([len(frames)]))


def teacher_forced_log_probs(model, memory_and_mask, caption: str) -> list[float]:
    """Log-probabilities of the caption's words and <eos> given the audio, as the bundled decoding options
    constrain them: <pad>/<bos>/<unk> suppressed, a content word at most once, <eos> forced at the length limit."""
    tokenizer, captioner = model.tokenizer, model.captioner
    words = tokenizer.encode(caption)
    assert tokenizer.decode(words) == caption  # the words are in the vocabulary: the caption is those tokens
    with torch.inference_mode():
        logits = captioner.decode(torch.tensor([[tokenizer.bos, *words]]), *memory_and_mask)[0][0].float()
    logits = logits.clone()  # out of inference mode, to edit it
    logits[:, [tokenizer.pad, tokenizer.bos, tokenizer.unk]] = -torch.inf
    for position in range(1, len(words) + 1):  # the words before `position` may not come again if content words
        used = {w for w in words[:position] if tokenizer.itos[w] not in STOPWORDS and w >= len(tokenizer.special_ids)}
        logits[position, list(used)] = -torch.inf
    targets = torch.tensor([*words, tokenizer.eos])
    log_probs = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0].tolist()
    if len(words) == captioner.dims.max_caption_tokens - 1:  # <eos> forced: probability 1
        log_probs[-1] = 0.0
    return log_probs


def test_caption_strings_are_the_best_of_the_results(model, clips, n_best_results):
    captions = model.caption(clips, beam_size=4)
    assert captions == [r.caption for r in model.caption_results(clips, beam_size=4)]
    assert captions == [r.alternatives[0] for r in n_best_results] == [r.caption for r in n_best_results]
    assert all(isinstance(c, str) and c for c in captions)


def test_confidence_is_the_geometric_mean_of_teacher_forced_token_probabilities(model, clips, n_best_results):
    for clip, result in zip(clips, n_best_results):
        log_probs = teacher_forced_log_probs(model, encoded(model, clip), result.caption)
        assert 0 < result.confidence <= 1
        assert result.confidence == pytest.approx(math.exp(sum(log_probs) / len(log_probs)), rel=1e-3)


def test_n_best_are_distinct_and_ranked_by_the_ranking_score(model, clips, n_best_results):
    penalty = USER_DECODING_DEFAULTS["length_penalty"]
    for clip, result in zip(clips, n_best_results):
        assert len(result.alternatives) == 4 and len(set(result.alternatives)) == 4
        memory_and_mask = encoded(model, clip)
        scores = []
        for caption in result.alternatives:
            log_probs = teacher_forced_log_probs(model, memory_and_mask, caption)
            scores.append(sum(log_probs) / len(log_probs) ** penalty)
        assert scores == sorted(scores, reverse=True), (result.alternatives, scores)


def test_decode_n_best_reports_log_probs_and_token_counts(model, clips):
    frames = model.encoder.encode_clips([model.load(clip) for clip in clips[:2]], CHUNK_SECONDS)
    with torch.inference_mode():
        memory, memory_mask = model.captioner.encode(torch.nn.utils.rnn.pad_sequence(frames, batch_first=True),
                                                     torch.tensor([len(f) for f in frames]))
    options = DecodingOptions(beam_size=3, **USER_DECODING_DEFAULTS)
    n_best = decode_n_best(model.captioner, memory, memory_mask, model.tokenizer, options, n_best=3)
    assert [results[0].tokens for results in n_best] == [r.tokens for r in decode(
        model.captioner, memory, memory_mask, model.tokenizer, options)]
    for clip, results in zip(clips, n_best):
        memory_and_mask = encoded(model, clip)
        for result in results:
            log_probs = teacher_forced_log_probs(model, memory_and_mask, result.text)
            assert result.n_tokens == len(result.tokens) + 1 == len(log_probs)
            assert result.log_prob == pytest.approx(sum(log_probs), abs=1e-3)
    with pytest.raises(ValueError, match="n_best must be from 1 to the beam size"):
        decode_n_best(model.captioner, memory, memory_mask, model.tokenizer, options, n_best=4)


def test_segment_results_carry_their_windows(model, clips):
    segments = model.caption_segments(clips[3], segment_seconds=6, beam_size=2)[0]
    results = model.caption_segment_results(clips[3], segment_seconds=6, beam_size=2, n_best=2)[0]
    assert [(s.start, s.end, s.caption) for s in segments] == [(r.start, r.end, r.caption) for r in results]
    assert results[0].start == 0 and len(results) >= 2 and all(0 < r.confidence <= 1 for r in results)


def test_n_best_above_the_beam_is_refused(model, clips, capsys):
    from audiocap.errors import AudiocapError

    with pytest.raises(AudiocapError, match="n_best .* from 1 to 2, not 3"):
        model.caption_results(clips[:1], beam_size=2, n_best=3)
    assert main(["caption", str(clips[0]), "--beam", "2", "--n-best", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --n-best 3 is more than --beam 2") and len(err.splitlines()) == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "text"])
def test_caption_cli_writes_the_n_best(fmt, clips, n_best_results, capsys):
    assert main(["caption", *map(str, clips), "--beam", "4", "--n-best", "4", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["file_name", "caption_predicted_1", "caption_predicted_2", "caption_predicted_3",
                           "caption_predicted_4"]
        assert rows[1:] == [[str(clip), *r.alternatives] for clip, r in zip(clips, n_best_results)]  # names as given
    elif fmt == "json":
        entries = json.loads(out)
        assert [e["captions"] for e in entries] == [r.alternatives for r in n_best_results]
        assert [e["caption"] for e in entries] == [r.caption for r in n_best_results]
        assert [e["confidence"] for e in entries] == pytest.approx([r.confidence for r in n_best_results], abs=1e-6)
    else:
        assert out.splitlines() == [f"{clip} #{k}: {caption}" for clip, r in zip(clips, n_best_results)
                                    for k, caption in enumerate(r.alternatives, 1)]


def test_caption_cli_json_gives_every_caption_a_confidence(clips, model, capsys):
    assert main(["caption", str(clips[3]), "--segment", "6", "--beam", "2", "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    expected = model.caption_segment_results(clips[3], segment_seconds=6, beam_size=2)[0]
    assert [(e["start"], e["caption"]) for e in entries] == [(r.start, r.caption) for r in expected]
    assert [e["confidence"] for e in entries] == pytest.approx([r.confidence for r in expected], abs=1e-6)
    assert all("captions" not in e for e in entries)  # only with --n-best above 1
