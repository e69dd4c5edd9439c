import json

import pytest

from audiocap.tokenizer import Tokenizer, normalize

CAPTIONS = [
    "A dog barks, loudly.",
    "The dog's owner whistles; a dog barks again!",
    "Rain falls on a tin-roof.",
]


def test_normalize_follows_clotho_conventions():
    assert normalize("  The Dog's   BARK, echoes; loudly! ") == "the dogs bark echoes loudly"
    assert normalize("tin-roof.") == "tin roof"
    assert normalize("...") == ""


def test_special_ids_and_vocabulary_order():
    tok = Tokenizer.build(CAPTIONS, min_count=1)
    assert (tok.pad, tok.bos, tok.eos, tok.unk) == (0, 1, 2, 3)
    assert tok.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    # most frequent first ("a": 3, "dog": 2, "barks": 2), ties alphabetical
    assert tok.itos[4:7] == ["a", "barks", "dog"]
    assert Tokenizer.build(CAPTIONS).itos == tok.itos  # deterministic


def test_min_count_maps_rare_words_to_unk():
    tok = Tokenizer.build(CAPTIONS, min_count=2)
    assert tok.itos[4:] == ["a", "barks", "dog"]
    ids = tok.encode("A dog whistles")
    assert ids == [tok.stoi["a"], tok.stoi["dog"], tok.unk]
    assert tok.decode(ids) == "a dog <unk>"


def test_encode_decode_round_trip():
    tok = Tokenizer.build(CAPTIONS)
    for caption in CAPTIONS:
        ids = tok.encode(caption)
        assert tok.bos not in ids and tok.eos not in ids
        assert tok.decode(ids) == normalize(caption)


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    tok = Tokenizer.build(CAPTIONS)
    body = tok.encode("a dog barks")
    assert tok.decode([tok.bos, *body, tok.eos, *tok.encode("rain"), tok.pad]) == "a dog barks"


def test_dict_round_trip_is_json_safe():
    tok = Tokenizer.build(CAPTIONS)
    restored = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored.itos == tok.itos and len(restored) == tok.n_vocab
    assert restored.encode(CAPTIONS[1]) == tok.encode(CAPTIONS[1])


def test_from_dict_rejects_other_formats():
    with pytest.raises(ValueError, match="format"):
        Tokenizer.from_dict({"format": "bpe", "words": []})
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer.from_dict({"format": Tokenizer.build([]).to_dict()["format"], "words": ["a", "a"]})
