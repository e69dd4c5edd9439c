"""METEOR 1.5 (Denkowski & Lavie, 2014) through its jar, exactly as the COCO toolkit calls it.

The toolkit starts `meteor-1.5.jar - - -stdio -l en -norm`, sends one `SCORE ||| refs ||| hyp`
line per clip and reads back its sufficient statistics, then one `EVAL ||| stats ||| ...` line,
which returns the per-clip scores and the corpus score (computed from the pooled statistics, so
not the mean of the per-clip scores). We use the same protocol and one JVM per evaluation, but
stream the SCORE lines from a writer thread instead of waiting for each answer in turn. The JVM
runs in a temporary directory, so a read-only install is never written to.
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
    command = [java_executable(options.java), f"-Xmx{options.max_memory}", "-jar", str(find_meteor_jar(options.jar)),
               "-", "-", "-stdio", "-l", "en", "-norm"]
    with tempfile.TemporaryDirectory(prefix="audiocap-meteor-") as workdir:
        process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        try:
            return _evaluate(process, candidates, references)
        except (BrokenPipeError, ValueError) as error:
            stderr = process.stderr.read().decode(errors="replace")[-2000:]
            raise MetricError(f"METEOR ({command[3]}) failed: {error}\n{stderr}") from None
        finally:
            process.kill()
            process.wait()


def _evaluate(process: subprocess.Popen, candidates: list[str], references: list[list[str]]):
    def write_score_lines():
        for candidate, refs in zip(candidates, references):
            process.stdin.write((_score_line(candidate, refs) + "\n").encode())
        process.stdin.flush()

    writer = threading.Thread(target=write_score_lines, daemon=True)
    writer.start()
    stats = [process.stdout.readline().decode().strip() for _ in candidates]
    writer.join()
    process.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
    process.stdin.flush()
    per_clip = np.array([float(process.stdout.readline().strip()) for _ in candidates])
    corpus = float(process.stdout.readline().strip())
    return corpus, per_clip
