"""Our metrics against pycocoevalcap itself (imported here, run here), on real captions.

The Java PTB tokenizer runs once over every caption of the shared CSVs (session fixture); the
reference BLEU/ROUGE-L/CIDEr-D run on the toolkit's own tokens; METEOR runs on a subset.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiocap.errors import MetricError
from audiocap.metrics import evaluate, score
from audiocap.metrics.bleu import bleu
from audiocap.metrics.cider import cider_d
from audiocap.metrics.rouge import lcs_lengths, rouge_l
from audiocap.metrics.spice import SpiceOptions, find_spice, parse_spice_output
from audiocap.metrics.tokenizer import PUNCTUATIONS, _plain_tokens, ptb_tokens, tokenize, tokenize_batch

pycocoevalcap = pytest.importorskip("pycocoevalcap.bleu.bleu")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: E402

# Lines that exercise the lexer rules captions rarely use.
TRICKY = [
    "A man's dog doesn't bark; it can't won't.", 'He said "hello" to \'them\' and (me) [you] {us}.',
    "A car -- then a bike - and a well-known sound...", "dogs' barks and the '90s o'clock rock'n'roll",
    "It’s a “quote” here… and — dash", "ok.. wait.... now", "hello world!! really?!", "gonna wanna cannot",
    "a p.a. system at 3 p.m. etc. vs. Mr. Smith", "a.b.c.d 2,000 1/2 50% $5 vroom/vroom under_score",
    "room.Then out. A Mass. in a car wash.", "a*b ** ___ # @user foo@bar.com", "ha-ha- ha -ha ha--ha",
    "", "   ", "Church bells ring. .",
]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def clotho_validation(shared_data):
    rows = _read(shared_data / "clotho" / "clotho_captions_validation.csv")
    return [[row[f"caption_{k}"] for k in range(1, 6)] for row in rows]


@pytest.fixture(scope="session")
def all_captions(shared_data) -> list[str]:
    captions = []
    for path in sorted((shared_data / "clotho").glob("*.csv")) + sorted((shared_data / "system_outputs").glob("*.csv")):
        captions += [v for row in _read(path) for k, v in row.items() if k.startswith("caption")]
    for path in sorted((shared_data / "audiocaps").glob("*.csv")):
        captions += [row["caption"] for row in _read(path)]
    return sorted(set(captions)) + TRICKY


@pytest.fixture(scope="session")
def java_tokens(all_captions) -> dict[str, str]:
    """caption -> the Java tokenizer's output, through pycocoevalcap's PTBTokenizer, in one JVM run."""
    tokenized = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(all_captions)})
    return {c: tokenized[i][0] for i, c in enumerate(all_captions)}


def test_tokenizer_matches_java_on_every_caption(java_tokens):
    mismatches = [(c, j, tokenize(c)) for c, j in java_tokens.items() if tokenize(c) != j]
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:5]}"
    assert len(java_tokens) > 80_000


def test_batch_tokenizer_matches_java_on_every_caption(java_tokens):
    tokenize.cache_clear()  # so that every caption goes through the batch's own checks
    assert tokenize_batch(list(java_tokens)) == list(java_tokens.values())
    multi_line = ["A dog.\nNo. 5 barks", "Mr. Smith", "a cat\nmeows.", "gon\nna"]  # lines are not captions here
    assert tokenize_batch(multi_line) == [tokenize(c) for c in multi_line] == ["a dog no. 5 barks", "mr. smith",
                                                                               "a cat meows", "gon na"]
    assert tokenize_batch([]) == []


def test_plain_caption_fast_path_equals_full_lexer(all_captions):
    """The fast path (plain captions) gives the full lexer's tokens wherever it applies."""
    plain = {c: _plain_tokens(c) for c in all_captions}
    full = {c: " ".join(t for t in (t.lower() for t in ptb_tokens(c)) if t not in PUNCTUATIONS)
            for c, tokens in plain.items() if tokens is not None}
    assert [c for c in full if plain[c] != full[c]] == []
    assert len(full) > 0.95 * len(all_captions)  # and it does apply to nearly all captions
    assert _plain_tokens("I can not, cannot.") is None and _plain_tokens("St. Mark rings no. 5") is None


def test_bit_parallel_lcs_on_sequences_longer_than_a_machine_word():
    def lcs(a, b):  # the textbook dynamic programme
        row = [0] * (len(b) + 1)
        for x in a:
            diagonal, row[0] = 0, 0
            for j, y in enumerate(b, start=1):
                diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
        return row[-1]

    rng = np.random.default_rng(0)
    pairs = [(rng.integers(1, 4, rng.integers(0, 150)), rng.integers(1, 4, rng.integers(0, 150))) for _ in range(50)]
    pairs += [(np.array([1] * 64), np.array([1] * 64)), (np.array([2] * 65), np.array([2] * 130))]

    def padded(sequences):
        out = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int64)
        for row, s in zip(out, sequences):
            row[: len(s)] = s
        return out

    expected = [lcs(list(a), list(b)) for a, b in pairs]
    assert list(lcs_lengths(padded([a for a, _ in pairs]), padded([b for _, b in pairs]))) == expected


def test_bleu_cider_with_a_vocabulary_too_large_for_plain_int64_ngram_codes():
    """60,000 distinct words: 4-gram codes overflow int64 and are renumbered on the way."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60_000)]
    captions = [" ".join(words[i * 20:(i + 1) * 20]) for i in range(3000)]
    common = [" ".join(rng.choice(words[:50], 8)) for _ in range(3000)]  # shared n-grams to match
    candidates = [f"{a} {b}" for a, b in zip(captions[:600], common[:600])]
    references = [[f"{captions[600 + 4 * i + k]} {common[600 + 4 * i + k]}" for k in range(4)] for i in range(600)]
    res, gts = {i: [c] for i, c in enumerate(candidates)}, dict(enumerate(references))
    np.testing.assert_allclose(bleu(candidates, references).corpus, Bleu(4).compute_score(gts, res, verbose=0)[0],
                               rtol=0, atol=1e-9)
    reference, reference_per_clip = Cider().compute_score(gts, res)
    assert abs(cider_d(candidates, references)[0] - reference) < 1e-9
    # in chunks, the n-grams are numbered across chunks through the references' bigrams (document_frequency.py)
    chunked = score(candidates, references, "cider_d", chunk_clips=50)
    np.testing.assert_allclose(chunked.per_clip["cider_d"], reference_per_clip, rtol=0, atol=1e-9)


def _cases(shared_data, clotho_validation):
    """(name, candidates, references): Clotho leave-one-out rounds and the real system outputs."""
    for k in range(5):
        yield f"clotho-loo-{k}", [c[k] for c in clotho_validation], [c[:k] + c[k + 1:] for c in clotho_validation]
    for path in sorted((shared_data / "system_outputs").glob("*.csv")):
        rows = _read(path)
        yield path.stem, [r["caption_predicted"] for r in rows], [[r[f"caption_{k}"] for k in range(1, 6)] for r in rows]


@pytest.fixture(scope="session")
def reference_scores(shared_data, clotho_validation, java_tokens):
    """Per case: pycocoevalcap's BLEU, ROUGE-L and CIDEr-D on the Java tokenizer's tokens."""
    results = {}
    for name, candidates, references in _cases(shared_data, clotho_validation):
        res = {i: [java_tokens[c]] for i, c in enumerate(candidates)}
        gts = {i: [java_tokens[r] for r in refs] for i, refs in enumerate(references)}
        results[name] = dict(
            candidates=candidates, references=references,
            bleu=Bleu(4).compute_score(gts, res, verbose=0), rouge=Rouge().compute_score(gts, res),
            cider=Cider().compute_score(gts, res),
        )
    return results


@pytest.mark.parametrize("case", [f"clotho-loo-{k}" for k in range(5)] + ["example_1", "example_2"])
def test_bleu_rouge_cider_equal_pycocoevalcap(reference_scores, case):
    ref = reference_scores[case]
    candidates = [tokenize(c) for c in ref["candidates"]]
    references = [[tokenize(r) for r in refs] for refs in ref["references"]]

    ours = bleu(candidates, references)
    np.testing.assert_allclose(ours.corpus, ref["bleu"][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.per_clip, np.array(ref["bleu"][1]).T, rtol=0, atol=1e-9)
    mean, per_clip = rouge_l(candidates, references)
    assert abs(mean - ref["rouge"][0]) < 1e-9
    np.testing.assert_allclose(per_clip, ref["rouge"][1], rtol=0, atol=1e-9)
    mean, per_clip = cider_d(candidates, references)
    assert abs(mean - ref["cider"][0]) < 1e-9
    np.testing.assert_allclose(per_clip, ref["cider"][1], rtol=0, atol=1e-9)


@pytest.mark.filterwarnings("ignore:.*empty after tokenization")  # example_1 has empty candidates
@pytest.mark.parametrize("case", ["clotho-loo-0", "example_1"])
def test_score_shares_tokens_and_ngrams_and_equals_pycocoevalcap(reference_scores, case):
    ref = reference_scores[case]
    ours = score(ref["candidates"], ref["references"], metrics=["bleu", "rouge_l", "cider_d"])
    np.testing.assert_allclose([ours.corpus[f"bleu_{n}"] for n in range(1, 5)], ref["bleu"][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.array([ours.per_clip[f"bleu_{n}"] for n in range(1, 5)]), ref["bleu"][1],
                               rtol=0, atol=1e-9)
    for name, key in (("rouge_l", "rouge"), ("cider_d", "cider")):
        assert abs(ours.corpus[name] - ref[key][0]) < 1e-9
        np.testing.assert_allclose(ours.per_clip[name], ref[key][1], rtol=0, atol=1e-9)


@pytest.mark.filterwarnings("ignore:.*empty after tokenization")  # example_1 has empty candidates
@pytest.mark.parametrize("case", [f"clotho-loo-{k}" for k in range(5)] + ["example_1", "example_2"])
def test_scoring_in_chunks_of_a_few_clips_equals_one_chunk_and_pycocoevalcap(reference_scores, case):
    """Chunks of 7 clips: BLEU's counts added up, ROUGE-L per clip, CIDEr-D with the document frequencies of
    every chunk's references."""
    ref = reference_scores[case]
    metrics = ["bleu", "rouge_l", "cider_d"]
    chunked = score(ref["candidates"], ref["references"], metrics, chunk_clips=7)
    whole = score(ref["candidates"], ref["references"], metrics, chunk_clips=len(ref["candidates"]))
    for name in [f"bleu_{n}" for n in range(1, 5)] + ["rouge_l"]:
        assert chunked.corpus[name] == whole.corpus[name]
        np.testing.assert_array_equal(chunked.per_clip[name], whole.per_clip[name])
    # CIDEr-D's sums run over the n-grams in another order: equal to float rounding
    np.testing.assert_allclose(chunked.per_clip["cider_d"], whole.per_clip["cider_d"], rtol=0, atol=1e-12)
    np.testing.assert_allclose([chunked.corpus[f"bleu_{n}"] for n in range(1, 5)], ref["bleu"][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(chunked.per_clip["rouge_l"], ref["rouge"][1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(chunked.per_clip["cider_d"], ref["cider"][1], rtol=0, atol=1e-9)
    assert abs(chunked.corpus["cider_d"] - ref["cider"][0]) < 1e-9


def test_empty_candidate_scores_zero_like_the_toolkit():
    candidates, references = ["", "a dog barks"], [["a cat meows", "a dog barks loudly"], ["a dog barks"]]
    res, gts = {i: [c] for i, c in enumerate(candidates)}, {i: r for i, r in enumerate(references)}
    assert cider_d(candidates, references)[1][0] == Cider().compute_score(gts, res)[1][0] == 0
    assert rouge_l(candidates, references)[1][0] == Rouge().compute_score(gts, res)[1][0] == 0
    np.testing.assert_allclose(bleu(candidates, references).per_clip.T, Bleu(4).compute_score(gts, res, verbose=0)[1], atol=1e-12)
    with pytest.warns(UserWarning, match="1 of 2 candidates are empty"):
        scores = evaluate(candidates, references, metrics=["bleu", "cider_d"])
    assert set(scores) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d"}
    # score() splits on whitespace; the toolkit's ROUGE-L on " ", where "" is one token.
    candidates, references = ["", "", "a dog"], [["a cat"], ["", "a dog"], ["a dog", ""]]
    with pytest.warns(UserWarning, match="2 of 3 candidates are empty"):
        shared = score(candidates, references, metrics=["rouge_l"])
    expected = Rouge().compute_score(dict(enumerate(references)), {i: [c] for i, c in enumerate(candidates)})[1]
    np.testing.assert_array_equal(shared.per_clip["rouge_l"], expected)
    np.testing.assert_array_equal(rouge_l(candidates, references)[1], expected)


def test_meteor_equal_pycocoevalcap_on_subset(clotho_validation):
    """Scored in chunks of 64 clips, the statistics summed as the jar's EVAL sums them (which leaves out the one
    chunk of a clip whose words all match: the first 3 candidates are one of their references)."""
    from pycocoevalcap.meteor.meteor import Meteor

    clips = [[c[1], *c[1:]] if i < 3 else c for i, c in enumerate(clotho_validation[:200])]
    candidates = [tokenize(c[0]) for c in clips]
    references = [[tokenize(r) for r in c[1:]] for c in clips]
    ours = score([c[0] for c in clips], [c[1:] for c in clips], metrics=["meteor"], chunk_clips=64)
    reference, per_clip = Meteor().compute_score(dict(enumerate(references)), {i: [c] for i, c in enumerate(candidates)})
    assert ours.corpus["meteor"] == reference  # the same jar's numbers, read the same way
    np.testing.assert_array_equal(ours.per_clip["meteor"], per_clip)
    assert min(ours.per_clip["meteor"][:3]) > 0.99  # the perfect matches are there


def test_missing_java_is_reported_and_other_metrics_still_computed(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("AUDIOCAP_JAVA", raising=False)
    result = score(["a dog barks"], [["a dog is barking"]], metrics=["bleu", "meteor"])
    assert "bleu_4" in result.corpus and "meteor" not in result.corpus
    assert "Java was not found" in result.errors["meteor"]


def test_missing_corenlp_jars_say_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr("audiocap.metrics.spice.pycocoevalcap_dir", lambda: None)
    with pytest.raises(MetricError) as error:
        find_spice(tmp_path / "spice")
    message = str(error.value)
    assert "audiocap download spice" in message and "stanford-corenlp-3.6.0-models.jar" in message
    assert str(tmp_path / "spice" / "lib") in message
    result = score(["a dog barks"], [["a dog is barking"]], metrics=["cider_d", "spider"],
                   spice_options=SpiceOptions(home=tmp_path / "spice"))
    assert "spice" not in result.corpus and "spider" not in result.corpus and "cider_d" in result.corpus
    assert "audiocap download spice" in result.errors["spice"]


def test_spice_json_parser_on_documented_format():
    # Shape of spice-1.0.jar's `-out` file with `-subset` (see the SPICE README): one object per image.
    tuple_scores = {"pr": 0.5, "re": 0.25, "f": 0.3333333333333333, "fn": 3.0, "numImages": 1.0, "fp": 1.0, "tp": 1.0}
    output = json.loads(json.dumps([
        {"image_id": "1", "scores": {"All": tuple_scores, "Object": tuple_scores, "Attribute": {**tuple_scores, "f": None},
                                     "Relation": tuple_scores, "Cardinality": tuple_scores, "Color": tuple_scores,
                                     "Size": tuple_scores},
         "test_tuples": [{"tuple": ["dog"], "truth_value": True}], "ref_tuples": [{"tuple": ["dog"], "truth_value": True}]},
        {"image_id": "0", "scores": {"All": {**tuple_scores, "f": "NaN"}}, "test_tuples": [], "ref_tuples": []},
    ]))
    scores = parse_spice_output(output, ["0", "1"])
    assert np.isnan(scores[0]) and scores[1] == pytest.approx(1 / 3)
    with pytest.raises(MetricError, match="no score for 1 clips"):
        parse_spice_output(output, ["0", "1", "2"])


def test_score_cli_json_and_per_clip(tmp_path, shared_data):
    rows = _read(shared_data / "system_outputs" / "example_1.csv")[:50]
    predictions, captions = tmp_path / "pred.csv", tmp_path / "caps.csv"
    with open(predictions, "w", newline="") as f:
        csv.writer(f).writerows([["file_name", "caption_predicted"]] + [[f"{i}.wav", r["caption_predicted"]] for i, r in enumerate(rows)])
    with open(captions, "w", newline="") as f:
        csv.writer(f).writerows([["file_name", "caption_1", "caption_2"]] + [[f"{i}.wav", r["caption_1"], r["caption_2"]] for i, r in enumerate(rows)])
    command = [sys.executable, "-m", "audiocap", "score", str(predictions), "--references", str(captions),
               "--metrics", "bleu,rouge_l,cider_d,vocab", "--json", "--per-clip", str(tmp_path / "clips.csv")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], env=os.environ)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = evaluate([r["caption_predicted"] for r in rows], [[r["caption_1"], r["caption_2"]] for r in rows],
                        metrics=["bleu", "rouge_l", "cider_d", "vocab"])
    assert printed == pytest.approx(expected)
    assert len(_read(tmp_path / "clips.csv")) == 50

    with open(predictions, "a", newline="") as f:
        csv.writer(f).writerow(["extra.wav", "a caption"])
    run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1], env=os.environ)
    assert run.returncode == 2 and "extra.wav" in run.stderr and "Traceback" not in run.stderr


def test_download_spice_from_a_local_mirror(tmp_path, monkeypatch):
    """`download spice` against a stand-in of the CoreNLP zip served on 127.0.0.1 (no internet)."""
    import functools
    import hashlib
    import http.server
    import threading
    import zipfile

    from audiocap.errors import DownloadError
    from audiocap.metrics import spice
    from audiocap.metrics.spice import CORENLP_ZIP, _has_spice, download_spice

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / CORENLP_ZIP, "w") as zf:
        for jar in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar", "other.jar"):
            zf.writestr(f"stanford-corenlp-full-2015-12-09/{jar}", b"stand-in " + jar.encode())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:  # the stand-in is not the pinned zip: refused, nothing kept; pinned, it is installed
        with pytest.raises(DownloadError, match="expected 55c9d653eb30ace7d5a60eb3138e424f9442e539"):
            download_spice(tmp_path / "spice", base_url=base_url)
        assert not list((tmp_path / "spice" / "lib").glob("stanford-corenlp*"))
        monkeypatch.setattr(spice, "CORENLP_ZIP_SHA1", hashlib.sha1((mirror / CORENLP_ZIP).read_bytes()).hexdigest())
        dest = download_spice(tmp_path / "spice", base_url=base_url)
    finally:
        server.shutdown()
    assert _has_spice(dest) and not (dest / "lib" / "other.jar").exists()
    assert (dest / "lib" / "stanford-corenlp-3.6.0-models.jar").read_bytes() == b"stand-in stanford-corenlp-3.6.0-models.jar"
    assert find_spice(dest) == dest


def test_score_cli_reads_references_with_a_byte_order_mark_like_train_and_evaluate(tmp_path, shared_data, capsys):
    """A references CSV saved with a BOM (as spreadsheet programs do) is scored like the plain one."""
    from audiocap import cli
    from audiocap.errors import DataError
    from audiocap.data.predictions import read_predictions_and_references

    rows = _read(shared_data / "system_outputs" / "example_1.csv")[:30]
    predictions = tmp_path / "pred.csv"
    with open(predictions, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["file_name", "caption_predicted"]] + [[f"{i}.wav", r["caption_predicted"]] for i, r in enumerate(rows)])
    table = [["file_name", "caption_1", "caption_2", "caption_3"]] + [
        [f"{i}.wav", r["caption_1"], r["caption_2"], ""] for i, r in enumerate(rows)]  # empty captions are dropped
    for name, encoding in [("plain.csv", "utf-8"), ("bom.csv", "utf-8-sig")]:
        with open(tmp_path / name, "w", newline="", encoding=encoding) as f:
            csv.writer(f).writerows(table)
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")

    plain = read_predictions_and_references(predictions, tmp_path / "plain.csv")
    assert read_predictions_and_references(predictions, tmp_path / "bom.csv") == plain
    assert plain[2] == [[r["caption_1"].strip(), r["caption_2"].strip()] for r in rows]
    printed = []
    for name in ["plain.csv", "bom.csv"]:
        command = ["score", str(predictions), "--references", str(tmp_path / name), "--metrics", "bleu,rouge_l,cider_d", "--json"]
        assert cli.main(command) == 0
        printed.append(json.loads(capsys.readouterr().out))
    assert printed[0] == printed[1]
    assert printed[0] == pytest.approx(evaluate([r["caption_predicted"] for r in rows], plain[2], metrics=["bleu", "rouge_l", "cider_d"]))

    (tmp_path / "wrong.csv").write_text("file_name,prediction\n0.wav,a dog\n")
    with pytest.raises(DataError, match=r"wrong.csv: missing column\(s\) caption_predicted \(or caption_predicted_1..K\) \(has \['file_name', 'prediction'\]\)"):
        read_predictions_and_references(tmp_path / "wrong.csv", tmp_path / "plain.csv")
    with pytest.raises(DataError, match="wrong.csv: expected columns file_name,caption_1..caption_N"):
        read_predictions_and_references(predictions, tmp_path / "wrong.csv")


def _write_rows(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def _score_cli(capsys, predictions: Path, references: Path, *options: str) -> tuple[int, str, str]:
    from audiocap import cli

    code = cli.main(["score", str(predictions), "--references", str(references), *options])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_score_cli_refuses_rows_it_would_silently_merge(tmp_path, capsys):
    """Duplicate file names (and `caption --segment` output, several windows per file) are errors that
    name the keys: a dict keyed by file name would score only the last row of each."""
    refs = _write_rows(tmp_path / "refs.csv", [["file_name", "caption_1"], ["a.wav", "a dog is barking"], ["b.wav", "rain"]])
    dup = _write_rows(tmp_path / "dup.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog barks"], ["a.wav", "a cat meows"]])
    code, out, err = _score_cli(capsys, dup, refs, "--metrics", "bleu")
    assert code == 2 and out == "" and "dup.csv: 1 file names have more than one prediction: a.wav" in err
    segments = _write_rows(tmp_path / "seg.csv", [["file_name", "start_seconds", "end_seconds", "caption_predicted"],
                                                  ["a.wav", "0", "10", "a dog"], ["a.wav", "10", "20", "a cat"]])
    code, out, err = _score_cli(capsys, segments, refs, "--metrics", "bleu")
    assert code == 2 and "segment captions cannot be scored per file" in err and "without --segment" in err
    one = _write_rows(tmp_path / "one.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog barks"]])
    dup_refs = _write_rows(tmp_path / "dup_refs.csv", [["file_name", "caption_1"], ["a.wav", "x"], ["a.wav", "y"]])
    code, out, err = _score_cli(capsys, one, dup_refs, "--metrics", "bleu")
    assert code == 2 and "dup_refs.csv: 1 file names have more than one row: a.wav" in err and "caption_1..caption_N" in err


def test_score_cli_scores_the_predicted_clips_of_a_larger_references_csv(tmp_path, capsys):
    """A few clips against a whole split's CSV: the predicted clips are scored, with a note; a prediction
    without references is an error naming it."""
    refs = _write_rows(tmp_path / "refs.csv", [["file_name", "caption_1"], ["a.wav", "a dog is barking"],
                                               ["b.wav", "rain falls"], ["c.wav", "a car passes"]])
    pred = _write_rows(tmp_path / "pred.csv", [["file_name", "caption_predicted"], ["b.wav", "rain"], ["a.wav", "a dog barks"]])
    code, out, err = _score_cli(capsys, pred, refs, "--metrics", "bleu,rouge_l", "--json")
    assert code == 0 and "note: 1 of 3 clips in" in err and "scoring the 2 predicted clips" in err
    assert json.loads(out) == pytest.approx(evaluate(["rain", "a dog barks"], [["rain falls"], ["a dog is barking"]],
                                                     metrics=["bleu", "rouge_l"]))
    extra = _write_rows(tmp_path / "extra.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog"], ["z.wav", "wind"]])
    code, out, err = _score_cli(capsys, extra, refs, "--metrics", "bleu")
    assert code == 2 and "1 predicted clips have no row in" in err and "z.wav" in err


def test_score_cli_names_the_clips_without_reference_captions(tmp_path, capsys):
    refs = _write_rows(tmp_path / "refs.csv", [["file_name", "caption_1", "caption_2"], ["a.wav", "a dog", ""],
                                               ["b.wav", " ", ""], ["c.wav", "", ""]])
    pred = _write_rows(tmp_path / "pred.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog"], ["b.wav", "rain"]])
    code, _, err = _score_cli(capsys, pred, refs, "--metrics", "bleu")
    assert code == 2 and "refs.csv: 1 clips have no reference caption: b.wav;" in err  # c.wav is not scored
    pred = _write_rows(tmp_path / "pred.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog"]])
    assert _score_cli(capsys, pred, refs, "--metrics", "bleu")[0] == 0
    with pytest.raises(MetricError, match=r"1 clips have none \(indices 1\)"):
        score(["a dog", "rain"], [["a dog"], []], metrics=["bleu"])


def test_score_cli_checks_the_per_clip_path_before_scoring(tmp_path, capsys, monkeypatch):
    import audiocap.metrics

    refs = _write_rows(tmp_path / "refs.csv", [["file_name", "caption_1"], ["a.wav", "a dog is barking"]])
    pred = _write_rows(tmp_path / "pred.csv", [["file_name", "caption_predicted"], ["a.wav", "a dog barks"]])
    real_score = audiocap.metrics.score
    monkeypatch.setattr(audiocap.metrics, "score", lambda *a, **k: pytest.fail("scored before the output path was checked"))
    for path, option_value, message in [(refs / "x.csv", refs, "not a folder; give a folder path"),
                                        (tmp_path, tmp_path, "is a folder")]:
        code, out, err = _score_cli(capsys, pred, refs, "--metrics", "bleu", "--per-clip", str(path))
        assert code == 2 and out == "" and f"--per-clip {option_value}: " in err and message in err, err
    monkeypatch.setattr(audiocap.metrics, "score", real_score)
    code, _, _ = _score_cli(capsys, pred, refs, "--metrics", "bleu", "--per-clip", str(tmp_path / "new" / "clips.csv"))
    assert code == 0 and [r["file_name"] for r in _read(tmp_path / "new" / "clips.csv")] == ["a.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "pred.csv", "refs.csv"]  # no temporary left
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["clips.csv"]


def test_score_cli_without_metrics_is_an_error(tmp_path, capsys):
    refs = _write_rows(tmp_path / "refs.csv", [["file_name", "caption_1"], ["a.wav", "a dog"]])
    for metrics in [",", ""]:
        code, out, err = _score_cli(capsys, refs, refs, "--metrics", metrics)
        assert code == 2 and out == "" and "no metrics given; choose from bleu" in err


def test_evaluate_checks_the_shape_of_references_and_takes_a_metric_string():
    """A flat list of references would be iterated letter by letter, each letter a reference."""
    with pytest.raises(TypeError, match=r"one list of strings per clip; references\[0\] is 'a dog is barking'"):
        evaluate(["a dog barks"], ["a dog is barking"], metrics=["bleu"])
    with pytest.raises(TypeError, match="candidates must be a list of strings"):
        evaluate("a dog barks", [["a dog is barking"]], metrics=["bleu"])
    expected = evaluate(["a dog barks"], [["a dog is barking"]], metrics=["bleu"])
    assert evaluate(["a dog barks"], [["a dog is barking"]], metrics="bleu") == expected
    assert set(evaluate(["a dog barks"], [["a dog is barking"]], metrics="bleu, rouge_l")) == {*expected, "rouge_l"}
    with pytest.raises(MetricError, match=r"unknown metrics \['blue'\]"):
        evaluate(["a dog barks"], [["a dog is barking"]], metrics="blue")
    with pytest.raises(MetricError, match="no metrics given"):
        evaluate(["a dog barks"], [["a dog is barking"]], metrics=[])
