"""Starting and stopping real service processes on loopback for the live tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, argv: Sequence[str], env: dict[str, str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log_fh = log.open("ab")
        self.proc = subprocess.Popen(
            list(argv), cwd=REPO, env=full_env, stdout=self._log_fh, stderr=subprocess.STDOUT
        )

    # Generous: on a loaded 2-core machine importing torch and transformers alone took over a minute.
    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as when the machine or the OOM killer takes the process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log_fh.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_fh.close()


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]


def slow_serve_command(port: int, delay_ms: float) -> list[str]:
    return [sys.executable, "-m", "tests.service.live_server", str(port), str(delay_ms)]
