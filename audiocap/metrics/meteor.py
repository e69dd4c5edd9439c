"""METEOR 1.5 (Denkowski & Lavie, 2014) through its jar, exactly as the COCO toolkit calls it.

The toolkit starts `meteor-1.5.jar - - -stdio -l en -norm`, sends one `SCORE ||| refs ||| hyp`
line per clip and reads back its sufficient statistics, then one `EVAL ||| stats ||| ...` line,
which returns the per-clip scores and the corpus score (computed from the pooled statistics, so
not the mean of the per-clip scores). We use the same protocol and one JVM per evaluation, but
stream the SCORE lines from a writer thread instead of waiting for each answer in turn, and evaluate
chunk after chunk (MeteorScorer), summing the statistics ourselves. The JVM runs in a temporary
directory, so a read-only install is never written to.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiocap.errors import MetricError
from audiocap.metrics.java import java_executable, pycocoevalcap_dir


@dataclass(frozen=True)
class MeteorOptions:
    jar: Path | None = None  # default: $AUDIOCAP_METEOR_JAR, then the jar in the pycocoevalcap wheel
    java: str | None = None
    max_memory: str = "2G"  # the toolkit's -Xmx


def find_meteor_jar(jar: Path | None = None) -> Path:
    package = pycocoevalcap_dir()
    candidates = [jar, os.environ.get("AUDIOCAP_METEOR_JAR"), package and package / "meteor" / "meteor-1.5.jar"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file():
            return Path(candidate)
    raise MetricError(
        "meteor-1.5.jar was not found: `pip install pycocoevalcap==1.2` (its wheel ships the jar and the "
        "paraphrase table in meteor/data/), or set AUDIOCAP_METEOR_JAR to the jar, with data/paraphrase-en.gz beside it."
    )


def _score_line(candidate: str, references: list[str]) -> str:
    # The toolkit strips the field separator from the hypothesis only.
    candidate = candidate.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), candidate))


def meteor(candidates: list[str], references: list[list[str]], options: MeteorOptions = MeteorOptions()):
    """(corpus METEOR, per-clip METEOR) of tokenized candidates against tokenized references."""
    with MeteorScorer(options) as scorer:
        per_clip = scorer.score(candidates, references)
        return scorer.corpus(), per_clip


class MeteorScorer:
    """One JVM scoring clips chunk after chunk (`score`); `corpus()` is the METEOR of every clip scored so far.

    The jar's EVAL adds up the statistics of the clips it is given (MeteorStats.addStats) and scores the sum.
    We add them up as it does, chunk after chunk, and score the sum: the same corpus score, without one line
    holding the statistics of every clip."""

    def __init__(self, options: MeteorOptions = MeteorOptions()):
        self.command = [java_executable(options.java), f"-Xmx{options.max_memory}", "-jar",
                        str(find_meteor_jar(options.jar)), "-", "-", "-stdio", "-l", "en", "-norm"]
        self.total: np.ndarray | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="audiocap-meteor-")
        self.process = subprocess.Popen(self.command, cwd=self._workdir.name, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()
        self._workdir.cleanup()

    def score(self, candidates: list[str], references: list[list[str]]) -> np.ndarray:
        """Per-clip METEOR of tokenized candidates against tokenized references; adds their statistics to the corpus'."""
        if not candidates:
            return np.zeros(0)

        def exchange():
            stats = self._statistics(candidates, references)
            per_clip, _ = self._evaluate(stats)
            return per_clip, np.array([line.split() for line in stats], dtype=np.float64)

        per_clip, numbers = self._talk(exchange)
        numbers = _as_added(numbers)
        if self.total is not None:
            numbers = np.vstack([self.total, numbers])
        self.total = np.add.accumulate(numbers)[-1]  # one addition after another, as the jar adds them
        return per_clip

    def corpus(self) -> float:
        """METEOR of every clip scored so far (of their summed statistics)."""
        if self.total is None:
            raise MetricError("METEOR: no clips were scored")
        # repr() gives the shortest decimal that parses back to the same double, in Java as in Python
        (corpus,), _ = self._talk(lambda: self._evaluate([" ".join(map(repr, self.total.tolist()))]))
        return float(corpus)

    def _talk(self, exchange):
        try:
            return exchange()
        except (BrokenPipeError, ValueError) as error:
            stderr = self.process.stderr.read().decode(errors="replace")[-2000:]
            raise MetricError(f"METEOR ({self.command[3]}) failed: {error}\n{stderr}") from None

    def _statistics(self, candidates: list[str], references: list[list[str]]) -> list[str]:
        """One SCORE line per clip, written from another thread while the answers are read (neither pipe fills)."""
        def write_score_lines():
            try:
                for candidate, refs in zip(candidates, references):
                    self.process.stdin.write((_score_line(candidate, refs) + "\n").encode())
                self.process.stdin.flush()
            except BrokenPipeError:  # the jar died: reading its answers fails too, with its message
                pass

        writer = threading.Thread(target=write_score_lines, daemon=True)
        writer.start()
        stats = [self.process.stdout.readline().decode().strip() for _ in candidates]
        writer.join()
        return stats

    def _evaluate(self, stats: list[str]) -> tuple[np.ndarray, float]:
        """(score of each statistics line, score of their sum), from the jar's EVAL."""
        self.process.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
        self.process.stdin.flush()
        per_clip = np.array([float(self.process.stdout.readline().strip()) for _ in stats])
        return per_clip, float(self.process.stdout.readline().strip())


def _as_added(stats: np.ndarray) -> np.ndarray:
    """Statistics lines (clips, 23) as MeteorStats.addStats adds them up: the one chunk of a clip whose words
    all match on both sides is not counted. A line holds the test and reference lengths and function words,
    then per matching stage (exact, stem, synonym, paraphrase) the test and reference content-word matches and
    function-word matches, then chunks and the test and reference word matches."""
    stages = stats[:, 4:-3].reshape(len(stats), -1, 4)
    test_matches, reference_matches = stages[:, :, [0, 2]].sum(axis=(1, 2)), stages[:, :, [1, 3]].sum(axis=(1, 2))
    one_chunk = (test_matches == stats[:, 0]) & (reference_matches == stats[:, 1]) & (stats[:, -3] == 1)
    stats = stats.copy()
    stats[one_chunk, -3] = 0
    return stats
