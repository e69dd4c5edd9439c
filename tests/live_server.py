"""A real uvicorn serving an app on 127.0.0.1 at a free port: in a thread of the test process (LiveServer), or
the `audiocap serve` command in a child process (ServeCommand)."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import uvicorn


class LiveServer:
    def __init__(self, app):
        self.app = app
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))  # port 0: the system picks a free one
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


class ServeCommand:
    """`audiocap serve ARGS` in a child process on a free port of 127.0.0.1, ready once it answers HTTP."""

    def __init__(self, *args: str, env: dict | None = None, start_seconds: float = 120):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url, self.start_seconds = f"http://127.0.0.1:{self.port}", start_seconds
        self.command = [sys.executable, "-m", "audiocap", "serve", "--port", str(self.port), *args]
        self.env = env

    def __enter__(self) -> "ServeCommand":
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would fill up with the request log
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        text=True)
        deadline = time.monotonic() + self.start_seconds
        while True:
            try:
                httpx.get(f"{self.url}/v1/health")  # any answer, 401 included: it is listening
                return self
            except httpx.ConnectError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = self.output()
                    self.__exit__()
                    raise RuntimeError(f"audiocap serve did not start:\n{output[-3000:]}")
                time.sleep(0.3)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()
