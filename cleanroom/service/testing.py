"""Run a real `cleanroom serve` in a subprocess on loopback (tests and benchmarks).

    with ServerProcess(data, broker_identity, admin_card=card, env={...}) as server:
        client = ServiceClient(server.url, identity)

The passphrase of the broker identity comes from CLEANROOM_PASSPHRASE in `env`
or the parent environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A service subprocess; `start()` waits until it answers, `kill()` is SIGKILL, `stop()` SIGTERM."""

    def __init__(self, data: Path, identity: Path, *, admin_card: Path | None = None,
                 args: list[str] = (), env: dict[str, str] | None = None, port: int | None = None,
                 log: Path | None = None):
        self.data, self.identity, self.admin_card = Path(data), Path(identity), admin_card
        self.args, self.env = list(args), dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log) if log else self.data.parent / f"{self.data.name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> ServerProcess:
        cmd = [sys.executable, "-m", "cleanroom", "serve", "--data", str(self.data), "--identity", str(self.identity),
               "--port", str(self.port), "--log-level", "warning", *self.args]
        if self.admin_card:
            cmd += ["--admin-card", str(self.admin_card)]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("the service did not start in time")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident memory of the server process (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
