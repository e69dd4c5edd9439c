"""`audiocap score` on many rows: time and peak memory per metric, against pycocoevalcap on a slice.

    python -m benchmarks.score_scale [--rows 1000000] [--slice 10000] [--sets bleu,rouge_l,cider_d,meteor,default]

Builds PREDICTIONS and REFERENCES CSVs of --rows clips from the real caption text in ../shared/data (Clotho
and AudioCaps, ~82,000 distinct captions): each row's candidate and 5 references are captions drawn at random
(seeded), so the rows repeat the same captions; `--shuffle-words` also shuffles each caption's words, so that
nearly every n-gram of the corpus is new (the worst case for CIDEr-D's document frequencies). Then, each in
its own process: `audiocap score` for each metric set (one metric, or `default`: bleu,meteor,rouge_l,cider_d),
and the same on the first --slice rows with ours and with pycocoevalcap 1.2 (its Java PTB tokenizer, BLEU,
ROUGE-L, CIDEr-D, METEOR), whose scores must agree. Reported per run: wall time, CPU time (the process and its
JVM), and peak resident memory (each process's VmHWM: Python, plus Java for METEOR and pycocoevalcap's
tokenizer); "vs pycocoevalcap" is pycocoevalcap's time on the slice scaled linearly to --rows, over ours.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT = "bleu,meteor,rouge_l,cider_d"
# Run in the child: the command (ours or pycocoevalcap's), then its peak memory on stderr.
RUNNER = ("import re, sys, runpy\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
          "finally:\n    print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), "
          "file=sys.stderr)\n")


def caption_pool() -> list[str]:
    captions = []
    for path in sorted((SHARED / "clotho").glob("clotho_captions_*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            captions += [row[f"caption_{k}"] for row in csv.DictReader(f) for k in range(1, 6)]
    for path in sorted((SHARED / "audiocaps").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            captions += [row["caption"] for row in csv.DictReader(f)]
    return sorted(set(captions))


def write_csvs(folder: Path, rows: int, shuffle_words: bool, seed: int = 0) -> tuple[Path, Path]:
    rng, pool = random.Random(seed), caption_pool()

    def caption() -> str:
        text = rng.choice(pool)
        if shuffle_words:
            words = text.split()
            rng.shuffle(words)
            text = " ".join(words)
        return text

    predictions, references = folder / f"predictions_{rows}.csv", folder / f"references_{rows}.csv"
    with open(predictions, "w", newline="", encoding="utf-8") as p, open(references, "w", newline="", encoding="utf-8") as r:
        write_predictions, write_references = csv.writer(p), csv.writer(r)
        write_predictions.writerow(["file_name", "caption_predicted"])
        write_references.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
        for i in range(rows):
            name = f"clip_{i:07d}.wav"
            write_predictions.writerow([name, caption()])
            write_references.writerow([name, *(caption() for _ in range(5))])
    return predictions, references


def first_rows(path: Path, rows: int, folder: Path) -> Path:
    out = folder / f"{path.stem.rsplit('_', 1)[0]}_{rows}.csv"
    with open(path, newline="", encoding="utf-8") as f, open(out, "w", newline="", encoding="utf-8") as g:
        writer = csv.writer(g)
        for i, row in enumerate(csv.reader(f)):
            if i > rows:
                break
            writer.writerow(row)
    return out


def cpu_of_children() -> float:
    """CPU seconds (user + system) of the children reaped so far, with theirs (a JVM)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(module_and_args: list[str]) -> dict:
    """Run `python -m module args` in a child; its wall and CPU time (with its JVM), peak memory, stdout."""
    start, cpu = time.perf_counter(), cpu_of_children()
    process = subprocess.Popen([sys.executable, "-c", RUNNER, *module_and_args], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    java_peaks = {}

    def watch_java():  # the JVM's own peak, read while it runs (its ru_maxrss would count its parent's pages)
        parent = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                for child in parent.children(recursive=True):
                    status = Path(f"/proc/{child.pid}/status").read_text()
                    java_peaks[child.pid] = int(status.split("VmHWM:")[1].split()[0])
            except (psutil.Error, OSError, IndexError):
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_java, daemon=True)
    watcher.start()
    stdout, stderr = process.communicate()
    watcher.join()
    peak = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_KB")]
    if process.returncode not in (0, 2) or not peak:
        raise SystemExit(f"{' '.join(module_and_args)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"wall": time.perf_counter() - start, "cpu": cpu_of_children() - cpu, "python_mb": peak[0] / 1024,
            "java_mb": sum(java_peaks.values()) / 1024, "stdout": stdout}


def ours(predictions: Path, references: Path, metrics: str) -> dict:
    run = measured(["audiocap", "score", str(predictions), "--references", str(references), "--metrics", metrics, "--json"])
    run["scores"] = json.loads(run["stdout"].strip().splitlines()[-1])
    return run


def theirs(predictions: Path, references: Path) -> dict:
    run = measured(["benchmarks.score_scale", "--pycocoevalcap", str(predictions), str(references)])
    run.update(json.loads(run["stdout"].strip().splitlines()[-1]))
    return run


def reference_cpu(reference: dict, metrics: str) -> float:
    """pycocoevalcap's CPU seconds for these metrics: its tokenization and their scorers."""
    return reference["stages"]["tokenize"] + sum(reference["stages"][m] for m in metrics.split(","))


def pycocoevalcap_scores(predictions: Path, references: Path) -> None:
    """(child) pycocoevalcap 1.2 on the two CSVs, as its COCOEvalCap runs it: PTB tokenizer, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with open(references, newline="", encoding="utf-8") as f:
        refs = {row[0]: row[1:] for row in list(csv.reader(f))[1:]}
    with open(predictions, newline="", encoding="utf-8") as f:
        candidates = {row[0]: row[1] for row in list(csv.reader(f))[1:]}
    def cpu() -> float:  # this process and the JVMs it has reaped
        return time.process_time() + cpu_of_children()

    stages, start = {}, cpu()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({name: [{"caption": r} for r in refs[name]] for name in candidates})
    res = tokenizer.tokenize({name: [{"caption": c}] for name, c in candidates.items()})
    stages["tokenize"], start = cpu() - start, cpu()
    scores = dict(zip((f"bleu_{n}" for n in range(1, 5)), Bleu(4).compute_score(gts, res, verbose=0)[0]))
    stages["bleu"], start = cpu() - start, cpu()
    meteor = Meteor()
    scores["meteor"] = meteor.compute_score(gts, res)[0]
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()  # reaped: its CPU time is counted
    stages["meteor"], start = cpu() - start, cpu()
    scores["rouge_l"] = Rouge().compute_score(gts, res)[0]
    stages["rouge_l"], start = cpu() - start, cpu()
    scores["cider_d"] = Cider().compute_score(gts, res)[0]
    stages["cider_d"] = cpu() - start
    print(json.dumps({"scores": scores, "stages": stages}))


def row(label: str, rows: int, run: dict, reference_seconds: float, reference_rows: int) -> str:
    """A table row; the ratio is pycocoevalcap's CPU time for as many rows (scaled linearly) over ours."""
    ratio = reference_seconds * rows / reference_rows / run["cpu"]
    return (f"| {label} | {rows:,} | {run['wall'] / 60:.1f} min | {run['cpu'] / 60:.1f} min | "
            f"{run['python_mb'] / 1024:.2f} GB | {run['java_mb'] / 1024:.2f} GB | {ratio:.1f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=10_000, help="rows scored by pycocoevalcap too")
    parser.add_argument("--sets", default=f"bleu,rouge_l,cider_d,meteor,default",
                        help="comma-separated: metrics scored alone, `default` for bleu,meteor,rouge_l,cider_d together")
    parser.add_argument("--shuffle-words", action="store_true", help="shuffle each caption's words (new n-grams)")
    parser.add_argument("--pycocoevalcap", nargs=2, type=Path, help=argparse.SUPPRESS)  # (child) run the reference
    args = parser.parse_args()
    if args.pycocoevalcap:
        return pycocoevalcap_scores(*args.pycocoevalcap)
    with tempfile.TemporaryDirectory(prefix="audiocap-score-scale-") as folder:
        predictions, references = write_csvs(Path(folder), args.rows, args.shuffle_words)
        slice_predictions = first_rows(predictions, args.slice, Path(folder))
        slice_references = first_rows(references, args.slice, Path(folder))
        reference = theirs(slice_predictions, slice_references)
        on_slice = ours(slice_predictions, slice_references, DEFAULT)
        difference = max(abs(on_slice["scores"][k] - v) for k, v in reference["scores"].items())
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in reference["stages"].items())
        print(f"{args.slice:,} rows: pycocoevalcap {reference['cpu']:.1f} s CPU ({stages}), ours {on_slice['cpu']:.1f} s; "
              f"largest score difference {difference:.1e}", flush=True)
        print("| metrics | rows | wall | CPU | peak RSS, Python | peak RSS, Java | CPU vs pycocoevalcap |",
              "| --- | --- | --- | --- | --- | --- | --- |",
              row("pycocoevalcap 1.2, default set", args.slice, reference, reference["cpu"], args.slice),
              row("ours, default set", args.slice, on_slice, reference["cpu"], args.slice), sep="\n", flush=True)
        for name in args.sets.split(","):
            metrics = DEFAULT if name == "default" else name
            run = ours(predictions, references, metrics)
            print(row(f"ours, {'default set' if name == 'default' else name}", args.rows, run,
                      reference_cpu(reference, metrics), args.slice), flush=True)


if __name__ == "__main__":
    main()
