"""Ours against pycocoevalcap, in the same process: Clotho evaluation split, leave-one-out rounds.

    PYTHONPATH=. python benchmarks/metrics.py [--rounds 5] [--meteor-rounds 1]   # from the project root

Prints, per round and in total, the time of tokenization + BLEU + ROUGE-L + CIDEr-D and of
METEOR for both, their ratio, and the largest score difference. Ours is timed as users call it,
`evaluate(candidates, references, metrics=["bleu", "rouge_l", "cider_d"])`, with our tokenizer's
cache cleared before each round, so that no round profits from an earlier one.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from audiocap.data.datasets import load_captions_csv
from audiocap.metrics import evaluate, meteor
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--meteor-rounds", type=int, default=1, help="METEOR takes ~13 s per round with pycocoevalcap")
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
    print(f"tokenize+BLEU+ROUGE-L+CIDEr-D, {args.rounds} rounds: ours {total_ours:.2f} s, pycocoevalcap "
          f"{total_reference:.2f} s, ratio {total_reference / total_ours:.1f}x")
    if args.meteor_rounds:
        print(f"METEOR, {min(args.meteor_rounds, args.rounds)} rounds: ours {meteor_ours:.1f} s, pycocoevalcap "
              f"{meteor_reference:.1f} s, ratio {meteor_reference / meteor_ours:.2f}x")


if __name__ == "__main__":
    main()
