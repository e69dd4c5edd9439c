"""Hostile and broken inputs against `audiocap caption`: does every one get a clean `error:` line while the
good file of its batch is still captioned, in bounded memory and time? (slow; not part of the test suite)

    python -m benchmarks.fuzz [--mutations 40] [--seed 0] [--timeout 120]   (from the project root)

Each case runs in its own process, `audiocap caption GOOD CASE --format csv` with the bundled model (model-file
cases: `audiocap caption GOOD --model CASE`), and is counted as one of: clean error (exit 1/2, an `error:` line,
no traceback), traceback, hang (no answer within --timeout), or accepted (exit 0: a mutation that still decodes).
"files lost": cases whose GOOD file got no caption (audio cases). The peak memory is the process's maximum
resident set. Cases: headers claiming absurd rates, loud/NaN/inf float samples, empty/truncated/text files,
broken and looping links, a 10-hour silent FLAC, random byte mutations (flips, cuts, insertions) of a real
Clotho clip, and random byte mutations and hostile metadata of the model file.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CLIP_DIR = ROOT.parent / "shared" / "data" / "clotho" / "audio" / "validation"
MODEL = ROOT / "audiocap" / "assets" / "default_model.safetensors"
# VmHWM is this process's peak resident memory (ru_maxrss would include the parent's at fork)
RUNNER = ("import re, sys\nfrom audiocap.cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
          "    print('FUZZ_MAXRSS_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), "
          "file=sys.stderr)\nsys.exit(code)")


def audio_cases(folder: Path, clip: Path, mutations: int, rng) -> list[Path]:
    cases = []

    def wav(name, samples, rate=16000, subtype="FLOAT"):
        sf.write(folder / name, samples, rate, subtype=subtype)
        cases.append(folder / name)
        return folder / name

    for value in (1e17, 1e30, np.inf, -np.inf, np.nan):
        wav(f"float_{value}.wav", np.full(16000, value, np.float32))
    for rate in (1, 10**7, 2**31 - 1):  # the header's rate rewritten
        path = wav(f"rate_{rate}.wav", np.zeros(44000, np.int16), 8000, "PCM_16")
        data = bytearray(path.read_bytes())
        data[24:28] = struct.pack("<I", rate)
        path.write_bytes(bytes(data))
    with sf.SoundFile(folder / "ten_hours.flac", "w", 8000, 1, format="FLAC") as f:
        for _ in range(600):
            f.write(np.zeros(8000 * 60, np.float32))
    cases.append(folder / "ten_hours.flac")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all")
    (folder / "truncated.wav").write_bytes(clip.read_bytes()[:100])
    (folder / "dangling.wav").symlink_to(folder / "nowhere.wav")
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    (folder / "folder.wav").mkdir()
    cases += [folder / n for n in ("empty.wav", "text.wav", "truncated.wav", "dangling.wav", "loop.wav", "folder.wav")]
    original = clip.read_bytes()
    for i in range(mutations):
        cases.append(mutate(original, folder / f"mutation_{i}{clip.suffix}", rng))
    return cases


def mutate(data: bytes, path: Path, rng) -> Path:
    """A copy of `data` with random bytes flipped (more often in the header), cut short, or with bytes inserted."""
    data = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:
        for _ in range(rng.integers(1, 20)):
            data[rng.integers(min(len(data), 64 if rng.random() < 0.7 else len(data)))] = rng.integers(256)
    elif kind == 1:
        data = data[:rng.integers(len(data))]
    else:
        at = rng.integers(len(data))
        data[at:at] = rng.bytes(int(rng.integers(1, 5000)))
    path.write_bytes(bytes(data))
    return path


def model_cases(folder: Path, mutations: int, rng) -> list[Path]:
    data = MODEL.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    cases = []

    def write(name, head, payload=body):
        raw = json.dumps(head).encode()
        (folder / name).write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
        cases.append(folder / name)

    dims = json.loads(header["__metadata__"]["dimensions"])
    for key, value in (("n_decoder_layers", 1500), ("d_model", 10**6), ("max_audio_frames", 10**9), ("n_vocab", -1)):
        write(f"dims_{key}.safetensors", {**header, "__metadata__": {**header["__metadata__"],
                                                                      "dimensions": json.dumps({**dims, key: value})}})
    encoder = json.loads(header["__metadata__"]["encoder"])
    evil = {**encoder, "options": {**encoder.get("options", {}), "checkpoint": str(MODEL)}}
    write("encoder_checkpoint.safetensors", {**header, "__metadata__": {**header["__metadata__"],
                                                                         "encoder": json.dumps(evil)}})
    write("small_claims_big.safetensors", {**header, "__metadata__": {**header["__metadata__"], "dimensions":
                                           json.dumps({**dims, "n_decoder_layers": 1500})}}, body[:15_000])
    for i in range(mutations):
        cases.append(mutate(data[:8 + n + 4096] if rng.random() < 0.5 else data, folder / f"model_{i}.safetensors", rng))
    return cases


def run(argv: list[str], timeout: float) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": timeout, "peak_mb": None, "stdout": ""}
    print(f"{done.returncode} {time.perf_counter() - start:5.1f} s  {' '.join(argv[1:3])}", file=sys.stderr, flush=True)
    peak = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("FUZZ_MAXRSS_KB")]
    if "Traceback" in done.stderr:
        outcome = "traceback"
    elif done.returncode == 0:
        outcome = "accepted"
    elif "error: " in done.stderr:
        outcome = "clean error"
    else:
        outcome = f"exit {done.returncode} without an error line"
    return {"outcome": outcome, "seconds": time.perf_counter() - start, "peak_mb": peak[0] / 1024 if peak else None,
            "stdout": done.stdout, "stderr": done.stderr}


def report(kind: str, results: list[tuple[Path, dict]], good: Path | None) -> None:
    counts = Counter(r["outcome"] for _, r in results)
    lost = sum(1 for _, r in results if good is not None and r["outcome"] != "hang" and str(good) not in r["stdout"])
    peaks = [r["peak_mb"] for _, r in results if r["peak_mb"]]
    print(f"| {kind} | {len(results)} | {counts['clean error']} | {counts['accepted']} | {counts['traceback']} | "
          f"{counts['hang']} | {max(peaks):.0f} MB | {max(r['seconds'] for _, r in results):.1f} s | "
          f"{lost if good is not None else '-'} |")
    for path, r in results:
        if r["outcome"] not in ("clean error", "accepted"):
            print(f"  {r['outcome']}: {path.name}: {r.get('stderr', '')[-300:]!r}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutations", type=int, default=40, help="random byte mutations of each real file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    clip = sorted(CLIP_DIR.glob("*.wav"))[0]
    with tempfile.TemporaryDirectory(prefix="audiocap-fuzz-") as tmp:
        folder = Path(tmp)
        (folder / "audio").mkdir()
        (folder / "models").mkdir()
        good = folder / "good.wav"
        good.write_bytes(clip.read_bytes())
        print("| inputs | tried | clean errors | accepted | tracebacks | hangs | peak memory | slowest | files lost |")
        print("|---|---|---|---|---|---|---|---|---|")
        audio = [(case, run(["caption", str(good), str(case), "--format", "csv", "--beam", "1"], args.timeout))
                 for case in audio_cases(folder / "audio", clip, args.mutations, rng)]
        report("audio files", audio, good)
        models = [(case, run(["caption", str(good), "--model", str(case), "--beam", "1"], args.timeout))
                  for case in model_cases(folder / "models", args.mutations, rng)]
        report("model files", models, None)


if __name__ == "__main__":
    main()
