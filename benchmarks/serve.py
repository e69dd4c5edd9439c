"""Load on `audiocap serve`: N concurrent clients post real recordings for a fixed time, against one-process
batch captioning of the same recordings (what `audiocap caption --batch-size 8` does) measured in the same run;
then a robustness run of R requests of which a share are bad inputs.

    python benchmarks/serve.py [--clients 8] [--seconds 60] [--clips 32] [--requests 1000] [--bad-share 0.1]

The server is `python -m audiocap serve` on 127.0.0.1 at a free port, in its own process (its peak memory
is its own), with the bundled model and its temporary folder inside one made here, so that leaked uploads
can be counted. Clients are threads of this process; each posts one ESC-50 clip (5 s, ../shared/data) at a
time and posts the next once answered. Targets: throughput with 8 clients within 1.3x of the batch rate;
in the robustness run no 5xx answer, no temporary file left, memory flat after warm-up.
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
        self.process = subprocess.Popen(
            [sys.executable, "-m", "audiocap", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--max-pending", "64"], env={**os.environ, "TMPDIR": str(tmp)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{self.url}/v1/health").raise_for_status()
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"audiocap serve did not start: {self.process.stderr.read()[-2000:]}")
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
    cut = statistics.quantiles(ok, n=100)
    return {"requests_per_s": len(ok) / elapsed, "p50": cut[49], "p95": cut[94], "p99": cut[98],
            "errors": len(statuses) - len(ok), "requests": len(statuses)}


def robustness_run(server: Server, clips: list[Path], n_requests: int, bad_share: float, clients: int) -> dict:
    """`n_requests` with every 1/bad_share-th a bad input; status counts, memory along the way."""
    bad = bad_requests(clips[0])
    every = round(1 / bad_share)
    plan = [(bad[(i // every) % len(bad)], "bad") if i % every == every - 1 else (good_request(clips[i % len(clips)]),
            "good") for i in range(n_requests)]
    memory, done, lock = [], [0], threading.Lock()

    def one(item) -> tuple[str, int]:
        request, kind = item
        status, _ = post(server.url, request)
        with lock:
            done[0] += 1
            if done[0] % (n_requests // 10) == 0:
                memory.append(server.memory_kb() // 1024)
        return kind, status

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, plan))
    return {
        "good_200": sum(k == "good" and s == 200 for k, s in results), "good": sum(k == "good" for k, _ in results),
        "bad_4xx": sum(k == "bad" and 400 <= s < 500 for k, s in results), "bad": sum(k == "bad" for k, _ in results),
        "5xx": sum(s >= 500 for _, s in results), "memory_mb_every_10pct": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000, help="robustness run (0: skip it)")
    parser.add_argument("--bad-share", type=float, default=0.1)
    args = parser.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.seconds <= MAX_SECONDS and 0 <= args.requests <= MAX_REQUESTS
            and 0 < args.bad_share < 1):
        parser.error(f"clients 1..{MAX_CLIENTS}, seconds up to {MAX_SECONDS}, requests up to {MAX_REQUESTS}, "
                     "bad share in (0, 1)")
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
                robust = robustness_run(server, clips, args.requests, args.bad_share, args.clients)
                print(f"robustness: {args.requests} requests, good answered 200: {robust['good_200']}/{robust['good']}, "
                      f"bad answered 4xx: {robust['bad_4xx']}/{robust['bad']}, 5xx: {robust['5xx']}, "
                      f"temporary files left: {server.uploads_left()}")
                print(f"server RSS (MB) after each 10 % of the requests: {robust['memory_mb_every_10pct']}; "
                      f"peak {server.memory_kb('VmHWM') / 1024:.0f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
