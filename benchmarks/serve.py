"""Load on `audiocap serve`: N concurrent clients post real recordings for a fixed time, against one-process
batch captioning of the same recordings (what `audiocap caption --batch-size 8` does) measured in the same run;
then a robustness run of R requests of which a share are bad inputs.

    python benchmarks/serve.py [--clients 8] [--seconds 60] [--clips 32] [--requests 1000] [--bad-share 0.1]
                               [--warmup 100]

The server is `python -m audiocap serve` on 127.0.0.1 at a free port, in its own process (its peak memory
is its own), with the bundled model and its temporary folder inside one made here, so that leaked uploads
can be counted. Clients are threads of this process; each posts one ESC-50 clip (5 s, ../shared/data) at a
time and posts the next once answered. Targets: throughput with 8 clients within 1.3x of the batch rate;
in the robustness run no 5xx answer, no temporary file left, memory flat after warm-up. Its requests go in 21
rounds (the first `--warmup` requests, then 5 % of the rest each); the server's RSS is read when it has been
idle after each round, and "flat" is the slope of a least-squares line through those readings, in MB per
1,000 requests (a server keeping each good request's decoded audio, 0.84 MB for 5 s, would show some +760).
"""
from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `audiocap caption` and `audiocap serve` run

import httpx  # noqa: E402

from audiocap.serve.batcher import IDLE_SECONDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ESC50 = ROOT.parent / "shared" / "data" / "esc50" / "audio"
MAX_CLIENTS, MAX_SECONDS, MAX_REQUESTS = 64, 900, 5000


class BatchReference:
    """One process captioning the clips in batches of 8 (audiocap caption's default), files read and decoded
    inside the timing as `audiocap caption` does. Measured before and after the load run: on a shared machine
    the load from other jobs drifts, and the mean of the two brackets the server's run."""

    def __init__(self, clips: list[Path]):
        import audiocap

        self.clips, self.pipeline = clips, audiocap.load_model(device="cpu")
        self.pipeline.caption(clips[:2])  # warm-up
        self.rates: list[float] = []

    def measure(self) -> None:
        started = time.perf_counter()
        self.pipeline.caption(self.clips, beam_size=3, batch_size=8)
        self.rates.append(len(self.clips) / (time.perf_counter() - started))


class Server:
    """`audiocap serve` in a child process on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url, self.tmp = f"http://127.0.0.1:{self.port}", tmp
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would fill up with tracebacks and stall it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "audiocap", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--max-pending", "64"], env={**os.environ, "TMPDIR": str(tmp)},
            stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{self.url}/v1/health").raise_for_status()
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(f"audiocap serve did not start: {self.log.read()[-2000:]}")
                time.sleep(0.3)

    def memory_kb(self, field: str = "VmRSS") -> int:
        """VmRSS (now) or VmHWM (peak) of the server process, in kB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    def uploads_left(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.tmp))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def post(url: str, request: dict) -> tuple[int, float]:
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/caption", timeout=300, **request)
    return answer.status_code, time.perf_counter() - started


def good_request(path: Path) -> dict:
    return {"files": {"file": (path.name, path.read_bytes())}}


def bad_requests(path: Path) -> list[dict]:
    """One of each kind of bad input the API refuses with a 4xx."""
    audio = path.read_bytes()
    return [
        {"files": {"file": ("notes.wav", b"not a recording\n" * 100)}},  # not audio
        {"files": {"file": ("cut.flac", audio[: len(audio) // 3])}},  # corrupt (truncated)
        {"files": {"file": ("empty.wav", b"")}},  # empty
        {"files": {"audio": (path.name, audio)}},  # wrong field
        {"params": {"beam_size": "0"}, "files": {"file": (path.name, audio)}},  # bad option
    ]


def load_run(server: Server, clips: list[Path], clients: int, seconds: float) -> dict:
    """Clients post clips for `seconds`; requests/s, latency percentiles, errors."""
    requests = itertools.cycle([good_request(p) for p in clips])
    lock, latencies, statuses = threading.Lock(), [], []
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                request = next(requests)
            status, latency = post(server.url, request)
            with lock:
                statuses.append(status)
                latencies.append(latency)

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    elapsed = time.monotonic() - started
    ok = [lat for lat, status in zip(latencies, statuses) if status == 200]
    return {"requests_per_s": len(ok) / elapsed, **percentiles(ok), "errors": len(statuses) - len(ok),
            "requests": len(statuses)}


def percentiles(latencies: list[float]) -> dict:
    cut = statistics.quantiles(latencies, n=100)
    return {"p50": cut[49], "p95": cut[94], "p99": cut[98]}


def robustness_run(server: Server, clips: list[Path], n_requests: int, bad_share: float, clients: int,
                   warmup: int) -> dict:
    """`n_requests`, every 1/bad_share-th a bad input, in rounds: the first `warmup` requests, then 5 % of the rest
    each. After each round the server has been idle long enough to trim its allocator, and its RSS is read: what
    it holds, not what is in flight. Requests/s counts the rounds' time, not the pauses between them."""
    good, bad, every = [good_request(p) for p in clips], bad_requests(clips[0]), round(1 / bad_share)
    plan = [(bad[(i // every) % len(bad)], "bad") if i % every == every - 1 else (good[i % len(good)], "good")
            for i in range(n_requests)]
    step = max(1, (n_requests - warmup) // 20)
    ends = [warmup, *range(warmup + step, n_requests, step), n_requests]
    answers, samples, busy = [], [], 0.0  # answers: (kind, status, seconds); samples: (requests since warm-up, MB)

    def one(item) -> tuple[str, int, float]:
        request, kind = item
        return kind, *post(server.url, request)

    with ThreadPoolExecutor(clients) as pool:
        for start, end in zip([0, *ends], ends):
            started = time.monotonic()
            answers += pool.map(one, plan[start:end])
            busy += time.monotonic() - started
            time.sleep(IDLE_SECONDS + 0.5)  # the server trims its allocator once idle that long
            samples.append((end - warmup, server.memory_kb() / 1024))
    return summarize_robustness(answers, busy, samples)


def summarize_robustness(answers: list[tuple[str, int, float]], busy: float, samples: list[tuple[int, float]]) -> dict:
    """Status counts, latencies of the captioned requests, and the slope of a least-squares line through the
    server's idle RSS after the warm-up, in MB per 1,000 requests."""
    counted, memory = zip(*samples)
    statuses = [(kind, status) for kind, status, _ in answers]
    return {
        "requests_per_s": len(answers) / busy, **percentiles([t for _, status, t in answers if status == 200]),
        "good_200": statuses.count(("good", 200)), "good": sum(k == "good" for k, _ in statuses),
        "bad_4xx": sum(k == "bad" and 400 <= s < 500 for k, s in statuses), "bad": sum(k == "bad" for k, _ in statuses),
        "5xx": sum(s >= 500 for _, s in statuses), "memory_mb": memory,
        "mb_per_1000": 1000 * statistics.linear_regression(counted, memory).slope,
    }


def report_robustness(server: Server, robust: dict, args) -> None:
    memory, peak = robust["memory_mb"], server.memory_kb("VmHWM") / 1024
    print(f"robustness: {args.requests} requests from {args.clients} clients, every {round(1 / args.bad_share)}th a "
          f"bad input; server RSS (MB), idle, after the {args.warmup} warm-up requests and after every 5 % of the "
          f"rest: {', '.join(f'{m:.0f}' for m in memory)}")
    print("| requests/s | p50 s | p95 s | p99 s | good answered 200 | bad answered 4xx | 5xx | temporary files left |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {robust['requests_per_s']:.2f} | {robust['p50']:.2f} | {robust['p95']:.2f} | {robust['p99']:.2f} "
          f"| {robust['good_200']} / {robust['good']} | {robust['bad_4xx']} / {robust['bad']} | {robust['5xx']} "
          f"| {server.uploads_left()} |")
    print()
    print("| RSS after warm-up | RSS at the end | RSS range after warm-up | slope, MB per 1,000 requests "
          "| peak RSS (whole run) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {memory[0]:.0f} MB | {memory[-1]:.0f} MB | {min(memory):.0f}-{max(memory):.0f} MB "
          f"| {robust['mb_per_1000']:+.1f} | {peak:.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000, help="robustness run (0: skip it)")
    parser.add_argument("--bad-share", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=100, help="robustness requests before memory is watched")
    args = parser.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.seconds <= MAX_SECONDS and 0 <= args.requests <= MAX_REQUESTS
            and 0 < args.bad_share < 1 and (args.requests == 0 or 1 <= args.warmup <= args.requests - 20)):
        parser.error(f"clients 1..{MAX_CLIENTS}, seconds up to {MAX_SECONDS}, requests up to {MAX_REQUESTS}, "
                     "bad share in (0, 1), warm-up from 1 to requests - 20")
    clips = sorted(ESC50.glob("*.flac"))[:: max(1, len(list(ESC50.glob("*.flac"))) // args.clips)][: args.clips]
    batch = BatchReference(clips)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        server = Server(Path(tmp))
        try:
            load_run(server, clips[:4], 2, 5)  # warm-up: both threads of the model, the page cache
            batch.measure()
            load = load_run(server, clips, args.clients, args.seconds)
            batch.measure()
            reference = statistics.mean(batch.rates)
            print(f"batch captioning (one process, batches of 8): {' and '.join(f'{r:.2f}' for r in batch.rates)} "
                  f"clips/s before and after the load run")
            print("| clients | requests/s | batch clips/s / requests/s | p50 s | p95 s | p99 s | errors |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            print(f"| {args.clients} | {load['requests_per_s']:.2f} | {reference / load['requests_per_s']:.2f}x "
                  f"| {load['p50']:.2f} | {load['p95']:.2f} | {load['p99']:.2f} | {load['errors']} of {load['requests']} |")
            print(f"server peak RSS after the load run: {server.memory_kb('VmHWM') / 1024:.0f} MB")
            if args.requests:
                robust = robustness_run(server, clips, args.requests, args.bad_share, args.clients, args.warmup)
                report_robustness(server, robust, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
