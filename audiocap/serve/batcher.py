"""One model, many requests: a single worker thread runs the model on batches gathered from concurrent requests.

    batcher = CaptionBatcher(pipeline, max_pending=16)
    with batcher.slot():                                   # QueueFull when max_pending requests are in flight
        future = batcher.submit(waveforms, beam_size=3, n_best=1)
        results = future.result()                          # list[CaptionResult], one per waveform

A request takes a slot when it arrives, before its upload is read, and gives it back when it is answered: the
slots bound what the server holds at once (uploads on disk, decoded audio in memory), not only the jobs waiting
for the model. The worker takes the first waiting job, then whatever else arrives within `collect_seconds` up to
`max_batch_clips` clips, and captions the jobs that share decoding options as one batch: decoding eight clips
together costs little more than one (see the README's captioning benchmark), so under load the batch pays.
After each batch, and once more when no job has come for IDLE_SECONDS, the worker hands the memory the C
allocator holds free back to the system (release_free_memory), so that the server's memory stays flat.
"""
from __future__ import annotations

import ctypes
import math
import os
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field


IDLE_SECONDS = 1.0  # with no job for this long after a batch, the worker trims the allocator once more


def glibc_function(name: str, argtypes: list):
    """glibc's function `name` returning int, or None where the C library has none (musl, macOS, Windows)."""
    try:
        function = getattr(ctypes.CDLL(None), name)  # None: the libraries this process has already loaded
    except (OSError, TypeError, AttributeError):  # no such symbol, or no dlopen(NULL) (Windows)
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


def find_malloc_trim():
    """glibc's `int malloc_trim(size_t pad)`, or None."""
    return glibc_function("malloc_trim", [ctypes.c_size_t])


MALLOC_TRIM = find_malloc_trim()
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def release_free_memory() -> None:
    """Hand the C allocator's free pages back to the system (glibc's malloc_trim; elsewhere nothing). glibc keeps
    what the batches' tensors and the requests' audio freed, in pieces between live blocks that it does not return
    by itself: without this the idle server holds tens of MB more and climbs in steps, though nothing leaks
    (docs/BENCHMARKS.md#serve)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def limit_malloc_arenas(arenas: int = 1) -> None:
    """Let glibc give the threads created from now on at most `arenas` malloc arenas, unless $MALLOC_ARENA_MAX
    already says how many. Each thread that frees into an arena of its own keeps pages there that malloc_trim
    cannot reach from the worker, so with one arena per thread the idle server's memory creeps up request after
    request; with one arena it stays within a few MB (docs/BENCHMARKS.md#serve)."""
    mallopt = glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(M_ARENA_MAX, arenas)


class QueueFull(Exception):
    """Every slot is taken; `retry_after` is a guess, in whole seconds, of when one frees up."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class CaptionJob:
    waveforms: list  # mono float32 arrays at the model's sample rate
    beam_size: int
    n_best: int
    future: Future = field(default_factory=Future)


class CaptionBatcher:
    def __init__(self, pipeline, max_pending: int = 16, max_batch_clips: int = 8, collect_seconds: float = 0.02):
        if max_pending < 1 or max_batch_clips < 1 or collect_seconds < 0:
            raise ValueError("max_pending and max_batch_clips must be at least 1, collect_seconds not negative")
        self.pipeline, self.max_pending = pipeline, max_pending
        self.max_batch_clips, self.collect_seconds = max_batch_clips, collect_seconds
        self.jobs: queue.SimpleQueue[CaptionJob | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.pending = 0  # requests holding a slot
        self.seconds_per_batch = 1.0  # running average, for Retry-After
        self.batches = self.clips = 0  # run so far (GET /v1/health)
        self.worker: threading.Thread | None = None

    def start(self) -> None:
        self.worker = threading.Thread(target=self.run, name="audiocap-captioner", daemon=True)
        self.worker.start()

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the worker."""
        if self.worker is not None:
            self.jobs.put(None)
            self.worker.join()
            self.worker = None

    @contextmanager
    def slot(self):
        with self.lock:
            if self.pending >= self.max_pending:
                raise QueueFull(self.retry_after())
            self.pending += 1
        try:
            yield
        finally:
            with self.lock:
                self.pending -= 1

    def retry_after(self) -> int:
        batches_ahead = self.pending / self.max_batch_clips + 1
        return max(1, math.ceil(self.seconds_per_batch * batches_ahead))

    def submit(self, waveforms: list, beam_size: int, n_best: int) -> Future:
        """A future of the waveforms' CaptionResults (call inside `slot`). Cancelling it before the worker
        takes it up skips the job."""
        if self.worker is None:
            raise RuntimeError("the batcher is not running; call start() first")
        job = CaptionJob(waveforms, beam_size, n_best)
        self.jobs.put(job)
        return job.future

    def run(self) -> None:
        idle_trim_due = False
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_SECONDS if idle_trim_due else None)
            except queue.Empty:  # idle: the requests have let go of their audio since the last trim
                release_free_memory()
                idle_trim_due = False
                continue
            if job is None or self.run_batch(job):
                return
            del job  # its waveforms go before the trim
            release_free_memory()
            idle_trim_due = True

    def run_batch(self, first: CaptionJob) -> bool:
        """Caption `first` and the jobs collected with it; whether the stop signal came meanwhile."""
        batch, stop = self.collect(first)
        started = time.monotonic()
        self.caption(batch)
        self.seconds_per_batch = 0.8 * self.seconds_per_batch + 0.2 * (time.monotonic() - started)
        return stop

    def collect(self, first: CaptionJob) -> tuple[list[CaptionJob], bool]:
        """`first` and the jobs that arrive within the collection window, up to max_batch_clips clips; and
        whether the stop signal came meanwhile."""
        batch, n_clips = [first], len(first.waveforms)
        deadline = time.monotonic() + self.collect_seconds
        while n_clips < self.max_batch_clips:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
            n_clips += len(job.waveforms)
        return batch, False

    def caption(self, batch: list[CaptionJob]) -> None:
        """Caption the jobs of one batch; jobs with the same decoding options share the model's batches."""
        by_options: dict[tuple[int, int], list[CaptionJob]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():  # False: its request gave up waiting
                by_options.setdefault((job.beam_size, job.n_best), []).append(job)
        for (beam_size, n_best), jobs in by_options.items():
            try:
                results = self.pipeline.caption_waveform_results(
                    [w for job in jobs for w in job.waveforms], beam_size, n_best)
            except Exception as err:  # noqa: BLE001 - handed to the requests; the worker must keep serving
                for job in jobs:
                    job.future.set_exception(err)
                continue
            self.batches, self.clips = self.batches + 1, self.clips + len(results)
            for job in jobs:
                job.future.set_result(results[:len(job.waveforms)])
                results = results[len(job.waveforms):]
