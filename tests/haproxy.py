"""A real HAProxy (Debian package) as a second proxy of a different make, for the edge e2e tests.

`start_haproxy` writes a minimal reverse-proxy config in front of one upstream and runs haproxy
in the foreground (``-db``) as our child in its own session; `HaproxyProcess.stop` ends it. The
config mirrors the nginx one in conftest.py (HTTP/1.1 to the origin with keep-alive, and
X-Forwarded-For) so what differs between the two is how each *reads* requests, not what it was
told to add.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_START_TIMEOUT = 15.0


def find_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    candidate = Path("/usr/sbin/haproxy")
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def write_haproxy_config(prefix: Path, *, port: int, upstream: str) -> Path:
    hostport = upstream.removeprefix("http://").rstrip("/")
    config = f"""# written by tests/haproxy.py
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout http-request 10s
    option forwardfor
frontend edge
    bind 127.0.0.1:{port}
    default_backend origin
backend origin
    server origin {hostport}
"""
    path = prefix / "haproxy.cfg"
    path.write_text(config)
    return path


def stop_session(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a proxy we started in its own session, then SIGKILL the whole session (master and
    workers only) if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class HaproxyProcess:
    process: subprocess.Popen[bytes]
    prefix: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.prefix / "stderr.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        stop_session(self.process, 10.0)


def start_haproxy(binary: str, prefix: Path, *, upstream: str) -> HaproxyProcess:
    """haproxy on a free port in front of ``upstream``; raises RuntimeError if it cannot start."""
    prefix.mkdir(parents=True, exist_ok=True)
    last = ""
    for _attempt in range(5):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = write_haproxy_config(prefix, port=port, upstream=upstream)
        with (prefix / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        proxy = HaproxyProcess(process, prefix, port)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proxy
            time.sleep(0.05)
        proxy.stop()
        last = proxy.log()
    raise RuntimeError(f"haproxy did not start:\n{last}")
