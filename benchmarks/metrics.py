"""Ours against pycocoevalcap and aac-metrics, in the same process: Clotho evaluation split, leave-one-out rounds.

    PYTHONPATH=. python benchmarks/metrics.py [--rounds 5] [--meteor-rounds 1] [--fense tiny|real|off]   # from the project root

Prints, per round and in total, the time of tokenization + BLEU + ROUGE-L + CIDEr-D and of
METEOR for both, their ratio, and the largest score difference. Ours is timed as users call it,
`evaluate(candidates, references, metrics=["bleu", "rouge_l", "cider_d"])`, with our tokenizer's
cache cleared before each round, so that no round profits from an earlier one.

FENSE (round 0) is timed in CPU seconds (one thread) against aac-metrics 0.6.0's `fense`, both loading the
same stand-in models from disk (tests/fense_stand_ins.py: "tiny" = 2-layer 32-wide BERTs, "real" = random
weights in the real sizes, bert-base-uncased's 12 x 768 for the detector and TinyBERT-L6's 6 x 768 for SBERT),
aac-metrics on our PTB tokens (its own tokenization needs Java 8-11).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from audiocap.data.datasets import load_captions_csv
from audiocap.metrics import evaluate, meteor, score
from audiocap.metrics.tokenizer import tokenize, tokenize_batch

CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clotho" / "clotho_captions_evaluation.csv"


def ours(candidates, references):
    tokenize.cache_clear()
    return evaluate(candidates, references, metrics=["bleu", "rouge_l", "cider_d"])


def reference(candidates, references):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    bleus = Bleu(4).compute_score(gts, res, verbose=0)[0]
    return dict({f"bleu_{n}": b for n, b in enumerate(bleus, start=1)}, rouge_l=Rouge().compute_score(gts, res)[0],
                cider_d=Cider().compute_score(gts, res)[0]), (gts, res)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def fense_round(candidates, references, size: str, repeats: int) -> None:
    import torch

    # One thread: CPU time is then the work done; a second thread's spin-waits on a shared machine are noise.
    torch.set_num_threads(1)
    from tests.fense_stand_ins import BERT_BASE, CHECKPOINT, SBERT, TINY, TINYBERT_L6, build_metrics_cache

    sys.modules.setdefault("msclap", types.SimpleNamespace(CLAP=None))  # aac-metrics' CLAP: not used, not loadable
    aac_fense = importlib.import_module("aac_metrics.functional.fense")
    from aac_metrics.functional.fer import BERTFlatClassifier
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    def theirs():
        detector = BERTFlatClassifier(model_type=str(cache / "bert-base-uncased"), num_classes=6)
        states = torch.load(cache / CHECKPOINT, weights_only=True)
        states["state_dict"].pop("encoder.embeddings.position_ids")
        detector.load_state_dict(states["state_dict"])
        return aac_fense.fense(tokenized, tokenized_refs, echecker=detector.eval(), device="cpu",
                               echecker_tokenizer=AutoTokenizer.from_pretrained(cache / "bert-base-uncased"),
                               sbert_model=SentenceTransformer(str(cache / SBERT), device="cpu"))

    tokenized = tokenize_batch(candidates)
    tokenized_refs = [tokenize_batch(refs) for refs in references]
    sizes = {"tiny": (TINY, TINY), "real": (BERT_BASE, TINYBERT_L6)}[size]
    with tempfile.TemporaryDirectory() as folder:
        cache = build_metrics_cache(Path(folder), CSV.with_name("clotho_captions_development.csv"), tokenized, *sizes)
        ours_cpu, theirs_cpu = [], []
        for _ in range(repeats):  # alternating order: the machine is shared
            start = time.process_time()
            our_scores = score(candidates, references, "fense", metrics_cache=cache)
            ours_cpu.append(time.process_time() - start)
            start = time.process_time()
            their_corpus, their_per_clip = theirs()
            theirs_cpu.append(time.process_time() - start)
    difference = max(np.abs(our_scores.per_clip[k] - their_per_clip[k].numpy()).max() for k in ("fense", "sbert_sim", "fer"))
    print(f"FENSE ({size} stand-ins), {len(candidates)} clips: ours {min(ours_cpu):.1f} s CPU, aac-metrics "
          f"{min(theirs_cpu):.1f} s CPU, ratio {min(theirs_cpu) / min(ours_cpu):.2f}x, max per-clip |diff| {difference:.1e} "
          f"(fense {our_scores.corpus['fense']:.4f} vs {float(their_corpus['fense']):.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--meteor-rounds", type=int, default=1, help="METEOR takes ~13 s per round with pycocoevalcap")
    parser.add_argument("--fense", choices=["tiny", "real", "off"], default="tiny",
                        help="size of the stand-in models FENSE is timed with (real: ~10 min a repeat)")
    parser.add_argument("--fense-repeats", type=int, default=2, help="best of this many runs of each")
    args = parser.parse_args()
    clips = [item.captions for item in load_captions_csv(args.csv, args.csv.parent)]

    total_ours = total_reference = meteor_ours = meteor_reference = 0.0
    for k in range(args.rounds):
        candidates, references = [c[k] for c in clips], [c[:k] + c[k + 1:] for c in clips]
        our_scores, our_time = timed(ours, candidates, references)
        (ref_scores, (gts, res)), ref_time = timed(reference, candidates, references)
        total_ours, total_reference = total_ours + our_time, total_reference + ref_time
        difference = max(abs(our_scores[m] - ref_scores[m]) for m in our_scores)
        print(f"round {k}: {len(clips)} clips  ours {our_time:.3f} s  pycocoevalcap {ref_time:.3f} s  "
              f"ratio {ref_time / our_time:.1f}x  max |diff| {difference:.1e}")
        if k < args.meteor_rounds:
            from pycocoevalcap.meteor.meteor import Meteor

            # Both tokenized outside the timing, as pycocoevalcap's METEOR takes tokens.
            tokenized = tokenize_batch(candidates)
            tokenized_refs = [tokenize_batch(refs) for refs in references]
            (our_meteor, _), our_time = timed(meteor.meteor, tokenized, tokenized_refs)
            (ref_meteor, _), ref_time = timed(lambda: Meteor().compute_score(gts, res))
            meteor_ours, meteor_reference = meteor_ours + our_time, meteor_reference + ref_time
            print(f"  METEOR: ours {our_time:.1f} s  pycocoevalcap {ref_time:.1f} s  ratio {ref_time / our_time:.2f}x  "
                  f"|diff| {abs(our_meteor - ref_meteor):.1e}")
    if args.rounds:
        print(f"tokenize+BLEU+ROUGE-L+CIDEr-D, {args.rounds} rounds: ours {total_ours:.2f} s, pycocoevalcap "
              f"{total_reference:.2f} s, ratio {total_reference / total_ours:.1f}x")
    if args.meteor_rounds and args.rounds:
        print(f"METEOR, {min(args.meteor_rounds, args.rounds)} rounds: ours {meteor_ours:.1f} s, pycocoevalcap "
              f"{meteor_reference:.1f} s, ratio {meteor_reference / meteor_ours:.2f}x")
    if args.fense != "off":
        fense_round([c[0] for c in clips], [c[1:] for c in clips], args.fense, args.fense_repeats)


if __name__ == "__main__":
    main()
