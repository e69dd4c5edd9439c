import pytest
import torch
import torch.nn.functional as F

from audiocap.decoding import (
    BeamSearchDecoder, DecodingOptions, GreedyDecoder, NoRepeatNGram, build_logit_filters, decode,
)
from audiocap.model import AudioCaptioner, ModelDimensions

from tests.conftest import TOKENIZER, clips, encoded_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def scripted_model(preference: torch.Tensor) -> AudioCaptioner:
    """Whatever the audio and history, the next-token logits are `preference` (V,)."""
    model = tiny_model(tie_embeddings=False)
    with torch.no_grad():
        model.decoder.ln.weight.zero_()
        model.decoder.ln.bias.fill_(1.0)  # hidden = ones(d)
        model.decoder.output.weight.copy_(preference[:, None].expand(-1, 16) / 16)
    return model


def run(decoder_class, model, memory, memory_mask, **kwargs):
    options = DecodingOptions()
    max_length = model.dims.max_caption_tokens - 1
    decoder = decoder_class(model, TOKENIZER, build_logit_filters(TOKENIZER, options, max_length), max_length, **kwargs)
    with torch.no_grad():
        return [hypotheses[0] for hypotheses in decoder.run(memory, memory_mask)]  # the best of each clip


def sequence_log_prob(model, memory, memory_mask, words) -> float:
    """Teacher-forced log-probability of `words` + <eos> under the default filters, without any cache."""
    tokens = torch.tensor([[TOKENIZER.bos, *words]])
    with torch.no_grad():
        logits = model.decode(tokens, memory, memory_mask)[0][0]
    logits[:, [TOKENIZER.pad, TOKENIZER.bos, TOKENIZER.unk]] = -torch.inf
    logprobs = F.log_softmax(logits, dim=-1).gather(1, torch.tensor([*words, TOKENIZER.eos])[:, None])[:, 0]
    if len(words) == model.dims.max_caption_tokens - 1:  # <eos> was forced: probability 1
        logprobs[-1] = 0.0
    return logprobs.sum().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed):
    model = tiny_model(seed)
    memory, memory_mask = encoded_batch(model, seed)
    greedy = run(GreedyDecoder, model, memory, memory_mask)
    beam = run(BeamSearchDecoder, model, memory, memory_mask, beam_size=1, length_penalty=1.0)
    assert [words for words, _ in beam] == [words for words, _ in greedy]
    assert [lp for _, lp in beam] == pytest.approx([lp for _, lp in greedy], abs=1e-5)


def test_greedy_with_cache_equals_full_recomputation():
    model = tiny_model()
    memory, memory_mask = encoded_batch(model)
    for i, result in enumerate(decode(model, memory, memory_mask, TOKENIZER)):
        tokens = [TOKENIZER.bos]  # greedy by re-running the whole prefix every step
        while len(tokens) <= model.dims.max_caption_tokens - 1 and tokens[-1] != TOKENIZER.eos:
            logits = model.decode(torch.tensor([tokens]), memory[i : i + 1], memory_mask[i : i + 1])[0][0, -1]
            logits[[TOKENIZER.pad, TOKENIZER.bos, TOKENIZER.unk]] = -torch.inf
            tokens.append(int(logits.argmax()))
        assert result.tokens == [t for t in tokens[1:] if t != TOKENIZER.eos]
        assert result.text == TOKENIZER.decode(result.tokens)


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("trained", [True, False])  # untrained: beams diverge and run to the forced <eos>
def test_reported_log_prob_matches_uncached_rescoring(trained_model, trained, beam_size):
    model = trained_model if trained else tiny_model()
    memory, memory_mask = encoded_batch(model)
    results = decode(model, memory, memory_mask, TOKENIZER, DecodingOptions(beam_size=beam_size))
    for i, result in enumerate(results):
        expected = sequence_log_prob(model, memory[i : i + 1], memory_mask[i : i + 1], result.tokens)
        assert result.log_prob == pytest.approx(expected, abs=1e-4)


def reference_beam_search(model, memory, memory_mask, beam_size, length_penalty):
    """One clip, written the plain way: every step re-runs each hypothesis from <bos> (no cache, no batch)
    and sorts all candidates; the rules are those BeamSearchDecoder documents."""
    eos, max_length = TOKENIZER.eos, model.dims.max_caption_tokens - 1
    beams, finished = [([TOKENIZER.bos], 0.0)], []
    while len(finished) < beam_size:
        candidates = []
        for tokens, score in beams:
            logits = model.decode(torch.tensor([tokens]), memory, memory_mask)[0][0, -1]
            logits[[TOKENIZER.pad, TOKENIZER.bos, TOKENIZER.unk]] = -torch.inf
            if len(tokens) - 1 >= max_length:
                logits[torch.arange(len(logits)) != eos] = -torch.inf
            logprobs = F.log_softmax(logits, dim=-1).tolist()
            candidates += [(score + lp, tokens + [t]) for t, lp in enumerate(logprobs) if lp > -float("inf")]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep beam order, then token order, as topk does here
        beams = []
        for score, tokens in candidates:
            if tokens[-1] == eos:
                if len(finished) < beam_size:
                    finished.append((tokens[1:-1], score))
            elif len(beams) < beam_size:
                beams.append((tokens, score))
            if len(beams) == beam_size:
                break
    return max(finished, key=lambda h: h[1] / (len(h[0]) + 1) ** length_penalty)


@pytest.mark.parametrize("trained", [True, False])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_equals_a_plain_reference(trained_model, trained, length_penalty):
    model = trained_model if trained else tiny_model(seed=3)
    memory, memory_mask = encoded_batch(model)
    options = DecodingOptions(beam_size=3, length_penalty=length_penalty)
    with torch.no_grad():
        results = decode(model, memory, memory_mask, TOKENIZER, options)
        for i, result in enumerate(results):
            n = int(memory_mask[i].sum())
            words, log_prob = reference_beam_search(model, memory[i:i + 1, :n], memory_mask[i:i + 1, :n], 3,
                                                    length_penalty)
            assert result.tokens == words
            assert result.log_prob == pytest.approx(log_prob, abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batch_equals_one_by_one(trained_model, beam_size):
    model = trained_model
    memory, memory_mask = encoded_batch(model)
    options = DecodingOptions(beam_size=beam_size)
    batched = decode(model, memory, memory_mask, TOKENIZER, options)
    for i, result in enumerate(batched):
        n_valid = int(memory_mask[i].sum())
        alone = decode(model, memory[i : i + 1, :n_valid], memory_mask[i : i + 1, :n_valid], TOKENIZER, options)[0]
        assert alone.tokens == result.tokens
        assert alone.log_prob == pytest.approx(result.log_prob, abs=1e-4)


def preference(*ranked_words: str, eos_rank: int | None = None) -> torch.Tensor:
    """Logits favouring `ranked_words` in order, <eos> placed at `eos_rank` (None = least liked)."""
    logits = torch.zeros(len(TOKENIZER))
    ranked = [TOKENIZER.stoi[w] for w in ranked_words]
    if eos_rank is not None:
        ranked.insert(eos_rank, TOKENIZER.eos)
    for rank, token in enumerate(ranked):
        logits[token] = 10.0 - rank
    if eos_rank is None:
        logits[TOKENIZER.eos] = -10.0
    return logits


@pytest.mark.parametrize("beam_size", [1, 3])
def test_length_limits(beam_size):
    memory, memory_mask = torch.zeros(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    eager_to_stop = scripted_model(preference("dog", "barks", eos_rank=0))
    results = decode(eager_to_stop, memory, memory_mask, TOKENIZER, DecodingOptions(beam_size=beam_size, min_length=3))
    assert [len(r.tokens) for r in results] == [3, 3]
    never_stops = scripted_model(preference("dog", "barks"))
    results = decode(never_stops, memory, memory_mask, TOKENIZER, DecodingOptions(beam_size=beam_size, max_length=5))
    assert [len(r.tokens) for r in results] == [5, 5]
    results = decode(never_stops, memory, memory_mask, TOKENIZER, DecodingOptions(beam_size=beam_size, max_length=99))
    assert [len(r.tokens) for r in results] == [11, 11]  # capped by max_caption_tokens - 1


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_repeat_ngram_and_content_word_ban(beam_size):
    memory, memory_mask = torch.zeros(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    repeater = scripted_model(preference("dog", "the", "barks", "a", "rain"))
    plain = decode(repeater, memory, memory_mask, TOKENIZER, DecodingOptions(beam_size=beam_size))[0]
    assert plain.text == " ".join(["dog"] * 11)

    result = decode(repeater, memory, memory_mask, TOKENIZER,
                    DecodingOptions(beam_size=beam_size, no_repeat_ngram_size=2))[0]
    bigrams = list(zip(result.tokens, result.tokens[1:]))
    assert len(result.tokens) == 11 and len(bigrams) == len(set(bigrams))

    result = decode(repeater, memory, memory_mask, TOKENIZER,
                    DecodingOptions(beam_size=beam_size, ban_repeated_content_words=True))[0]
    content = [w for w in result.text.split() if w in ("dog", "barks", "rain")]
    assert content and len(content) == len(set(content))
    assert result.text.split().count("the") > 1  # stopwords may repeat


def test_no_repeat_ngram_filter_bans_exactly_the_completing_tokens():
    tokens = torch.tensor([[1, 5, 6, 5, 7, 5]])  # bigrams starting with 5: (5,6), (5,7)
    logits = torch.zeros(1, 10)
    NoRepeatNGram(2).apply(logits, tokens)
    assert torch.isinf(logits[0]).nonzero().flatten().tolist() == [6, 7]


def test_options_are_validated():
    with pytest.raises(ValueError, match="beam_size"):
        DecodingOptions(beam_size=0)
    with pytest.raises(ValueError, match="min_length"):
        DecodingOptions(min_length=5, max_length=3)


def test_few_rows_decode_on_one_thread_and_the_thread_count_comes_back(trained_model, monkeypatch):
    """On a CPU a step of few rows (clips x beams) is bound by reading the weights: it runs on one intra-op
    thread, the same captions come out, and the caller's thread count is restored, also after an error."""
    import audiocap.decoding as decoding

    seen = []

    class RecordThreads(decoding.LogitFilter):
        def apply(self, logits, tokens):
            seen.append(torch.get_num_threads())

    class Fail(decoding.LogitFilter):
        def apply(self, logits, tokens):
            raise RuntimeError("a filter failed")

    extra = [RecordThreads()]
    build = decoding.build_logit_filters
    monkeypatch.setattr(decoding, "build_logit_filters", lambda *args: build(*args) + extra)
    memory, memory_mask = encoded_batch(trained_model)  # 3 clips: 9 rows at beam 3
    options = DecodingOptions(beam_size=3)
    torch.set_num_threads(2)
    try:
        few_rows = decode(trained_model, memory, memory_mask, TOKENIZER, options)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        monkeypatch.setattr(decoding, "SINGLE_THREAD_MAX_ROWS", 9)  # 9 rows are now "many"
        many_rows = decode(trained_model, memory, memory_mask, TOKENIZER, options)
        assert set(seen) == {2}
        assert [r.tokens for r in few_rows] == [r.tokens for r in many_rows]
        assert [r.log_prob for r in few_rows] == pytest.approx([r.log_prob for r in many_rows], abs=1e-5)
        monkeypatch.setattr(decoding, "SINGLE_THREAD_MAX_ROWS", 32)
        extra[:] = [Fail()]
        with pytest.raises(RuntimeError, match="a filter failed"):
            decode(trained_model, memory, memory_mask, TOKENIZER, options)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # this module's setting (fixture one_thread)
