"""`audiocap serve` keeps its memory flat: the allocator's free memory goes back to the system after each batch,
and hundreds of requests leave the idle server no larger than they found it."""
from __future__ import annotations

import ctypes
import io
import itertools
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import soundfile as sf

import audiocap
from audiocap.serve.batcher import IDLE_SECONDS, MALLOC_TRIM, CaptionBatcher, find_malloc_trim, limit_malloc_arenas
from tests.live_server import ServeCommand

# A server keeping each request's decoded second of audio grows ~46 MB over the 300 requests; without a leak the
# idle RSS moves by a few MB either way: the threshold sits far from both.
WARMUP, REQUESTS, MAX_GROWTH_MB = 50, 300, 15.0
FRAGMENT_BYTES, FRAGMENTS = 100_000, 1500  # below glibc's mmap threshold (128 KiB): on the heap

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RSS from /proc")


@pytest.fixture(scope="module")
def esc50(shared_data) -> list[Path]:
    return sorted((shared_data / "esc50" / "audio").glob("*.flac"))[::100][:4]


def test_no_malloc_trim_is_no_trim(monkeypatch):
    """Where the C library has no malloc_trim or mallopt (musl, macOS) or no dlopen(NULL) (Windows), the server
    runs without them."""
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    assert find_malloc_trim() is None

    def no_dlopen(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_dlopen)
    assert find_malloc_trim() is None
    limit_malloc_arenas()  # no mallopt either: nothing to limit, and no error


@pytest.mark.skipif(MALLOC_TRIM is None, reason="glibc's malloc_trim")
def test_a_batch_hands_the_memory_freed_between_live_blocks_back(esc50):
    """Memory freed in pieces between live blocks stays resident (glibc returns only a free heap top by itself);
    after its next batch the batcher's worker returns it."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    pipeline = audiocap.load_model(device="cpu")
    waveform = pipeline.load(esc50[0])
    batcher = CaptionBatcher(pipeline)
    batcher.start()
    blocks = []
    try:
        with batcher.slot():  # warm-up: the worker's own memory for a batch
            batcher.submit([waveform], 1, 1).result(timeout=300)
        time.sleep(IDLE_SECONDS + 1)  # past the worker's trim once idle
        before = rss_mb()
        blocks = [libc.malloc(FRAGMENT_BYTES) for _ in range(FRAGMENTS)]  # one after another on the heap
        for block in blocks:
            ctypes.memset(block, 1, FRAGMENT_BYTES)
        for block in blocks[::2]:
            libc.free(block)  # every other one: the live ones in between keep them from merging
        held = rss_mb()
        with batcher.slot():
            batcher.submit([waveform], 1, 1).result(timeout=300)
        time.sleep(IDLE_SECONDS + 1)  # the worker trims once it has answered, and again once idle
        returned = held - rss_mb()
    finally:
        batcher.close()
        for block in blocks[1::2]:
            libc.free(block)
    freed = FRAGMENT_BYTES * FRAGMENTS / 2 / 2**20
    assert held - before > 1.8 * freed, "the blocks were not all resident"
    assert returned > 0.6 * freed, f"{returned:.1f} MB of {freed:.1f} MB returned"


def test_memory_stays_flat_over_hundreds_of_requests(esc50):
    """After a warm-up, 300 requests of 1 s recordings, every 10th a bad input: the server's memory, read when it
    is idle, does not grow with them."""
    clips = [one_second_flac(path) for path in esc50]
    bad = [{"files": {"file": ("notes.wav", b"not a recording\n" * 100)}}, {"files": {"file": ("empty.wav", b"")}},
           {"files": {"audio": ("a.flac", clips[0])}}, {"params": {"beam_size": "0"}, "files": {"file": clips[0]}}]
    requests = [bad[i // 10 % len(bad)] if i % 10 == 9 else {"files": {"file": ("a.flac", clips[i % len(clips)])}}
                for i in range(WARMUP + REQUESTS)]
    # The server as users start it: it limits glibc to one malloc arena itself (limit_malloc_arenas).
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    with ServeCommand("--max-pending", "64", env=env) as server, \
            ThreadPoolExecutor(8) as pool:
        def answer(request: dict) -> int:
            return httpx.post(f"{server.url}/v1/caption", timeout=120, **request).status_code

        def idle_rss_mb() -> float:
            time.sleep(IDLE_SECONDS + 0.5)  # the server trims its allocator once it has been idle that long
            return rss_mb(server.process.pid)

        assert set(pool.map(answer, requests[:WARMUP])) == {200, 422}
        samples = [(0, idle_rss_mb())]  # (requests answered since the warm-up, RSS in MB)
        for start in range(WARMUP, len(requests), 50):
            assert set(pool.map(answer, requests[start:start + 50])) == {200, 422}
            samples.append((start + 50 - WARMUP, idle_rss_mb()))
    # The median of the slopes between every two samples (Theil-Sen): a leak raises them all, while one sample
    # caught high for a reason of its own cannot tip it the way it tips a least-squares line.
    growth = statistics.median((b - a) / (m - n) for (n, a), (m, b) in itertools.combinations(samples, 2)) * REQUESTS
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.1f} MB over {REQUESTS} requests: {samples}"


def one_second_flac(path: Path) -> bytes:
    samples, rate = sf.read(path, frames=sf.info(path).samplerate)
    file = io.BytesIO()
    sf.write(file, samples, rate, format="FLAC")
    return file.getvalue()


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
