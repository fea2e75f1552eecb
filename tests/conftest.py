"""Session fixtures that start real servers on 127.0.0.1 for the end-to-end tests.

This module owns:

- ``demo_targets`` — the bundled demo (origin, old proxy, new proxy) in a child process on
  ephemeral ports; yields ``{"origin": url, "old": url, "new": url}``.
- ``nginx_binary`` — the path of a real nginx, installed from Debian packages with apt-get when
  the machine has none (a fresh CI machine); the tests fail, never skip, when that is impossible.
- ``nginx_factory`` — starts a real nginx reverse proxy in front of the demo origin (or another
  upstream) with extra ``server { ... }`` directives, e.g. ``add_header X-Planted yes;``, and
  returns its base URL; ``nginx_proxy`` is the plain one.

Everything is xdist-safe: ports are ephemeral, every nginx gets its own directory under the
worker's own basetemp, and the one-time apt-get install is serialized by a file lock shared by all
workers of a run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from faultserver import ServerFactory, running
from haproxy import find_haproxy, stop_session
from hypothesis import HealthCheck, settings

from flamingo.demo import start_demo_process

# --------------------------------------------------------------------------------------------
# The demo targets
# --------------------------------------------------------------------------------------------

# Property tests are deterministic and unhurried: the same examples on every run and machine
# (derandomize), and no per-example deadline - CI shares 2 cores with the servers the
# end-to-end tests start, so wall-clock deadlines only measure that load.
settings.register_profile(
    "flamingo",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("flamingo")


@pytest.fixture(scope="session")
def demo_targets() -> Iterator[dict[str, str]]:
    """The demo origin, old and new proxies, running in a child process until the session ends."""
    with start_demo_process(old_port=0, new_port=0) as demo:
        yield dict(demo.urls)


# --------------------------------------------------------------------------------------------
# nginx: installing it
# --------------------------------------------------------------------------------------------

_NGINX_PACKAGES = ("nginx-light", "nginx")  # nginx-light first, as the project documents
_APT_TIMEOUT = 900.0


def _find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    # /usr/sbin is not on every PATH (non-login shells, some CI images).
    candidate = Path("/usr/sbin/nginx")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only, like apt-get itself

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_APT_TIMEOUT,
        check=False,
    )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _install_nginx() -> str:
    """apt-get install nginx (-light); pytest.fail with the reason if that is not possible."""
    if shutil.which("apt-get") is None:
        pytest.fail(
            "nginx is not installed and this machine has no apt-get to install it with; "
            "install nginx (Debian package nginx-light) and run the tests again",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail(
            "nginx is not installed and the tests do not run as root, so they cannot "
            "apt-get install it; run `sudo apt-get install -y nginx-light` first",
            pytrace=False,
        )
    update = _run_apt(["update"])
    if update.returncode != 0:
        pytest.fail(
            f"`apt-get update` failed (exit {update.returncode}), so nginx cannot be installed:\n"
            f"{_tail(update.stdout + update.stderr)}",
            pytrace=False,
        )
    attempts: list[str] = []
    for package in _NGINX_PACKAGES:
        result = _run_apt(["install", "-y", "--no-install-recommends", package])
        if result.returncode == 0 and _find_nginx():
            break
        attempts.append(f"$ apt-get install -y {package}\n{_tail(result.stdout + result.stderr)}")
    found = _find_nginx()
    if found is None:
        pytest.fail("could not install nginx with apt-get:\n" + "\n".join(attempts), pytrace=False)
    return found


@pytest.fixture(scope="session")
def nginx_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the nginx executable, installing the Debian package if it is missing."""
    found = _find_nginx()
    if found:
        return found
    # Under xdist every worker has its own basetemp; their common parent is shared by the run,
    # so the lock file there makes exactly one worker run apt-get while the others wait.
    lock = tmp_path_factory.getbasetemp().parent / "flamingo-nginx-install.lock"
    with _file_lock(lock):
        return _find_nginx() or _install_nginx()


# --------------------------------------------------------------------------------------------
# nginx: running it
# --------------------------------------------------------------------------------------------

_NGINX_START_TIMEOUT = 15.0
_NGINX_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5


def _free_port() -> int:
    """A port that was free a moment ago (nginx cannot take an already bound socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_nginx_config(
    prefix: Path,
    *,
    port: int,
    upstream: str,
    extra_server_directives: str = "",
    extra_http_directives: str = "",
) -> Path:
    """Write ``prefix/nginx.conf``: a reverse proxy on 127.0.0.1:``port`` in front of ``upstream``.

    Every file nginx writes (pid, logs, temp files) stays inside ``prefix``.
    """
    upstream_hostport = upstream.removeprefix("http://").rstrip("/")
    # Running as root, nginx would switch its workers to `nobody`, who cannot enter pytest's
    # 0700 basetemp where the temp directories live; so the workers stay root, on 127.0.0.1 only.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = f"""# written by tests/conftest.py
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix}/access.log;
{extra_http_directives}
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;

    upstream origin {{
        server {upstream_hostport};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{extra_server_directives}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(config)
    return path


@dataclass
class NginxProcess:
    """One nginx master running in the foreground (``daemon off``) as our child."""

    process: subprocess.Popen[bytes]
    prefix: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return _tail("\n".join(parts), 40)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL to its own process group if it hangs."""
        stop_session(self.process, _NGINX_STOP_TIMEOUT)


def _wait_until_listening(nginx: NginxProcess, deadline: float) -> bool:
    """True once nginx accepts connections; False if it exited first. Fails at the deadline."""
    pid_file = nginx.prefix / "nginx.pid"
    while time.monotonic() < deadline:
        if nginx.process.poll() is not None:
            return False
        # The master writes its pid file only after it has bound the listening sockets, so a
        # connection that succeeds after that is to this nginx, not to whoever raced for the port.
        if pid_file.exists() and pid_file.read_text().strip() == str(nginx.process.pid):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", nginx.port), timeout=0.5).close()
                return True
        time.sleep(0.05)
    nginx.stop()
    pytest.fail(
        f"nginx did not accept connections on {nginx.url} within "
        f"{_NGINX_START_TIMEOUT:g}s:\n{nginx.log()}",
        pytrace=False,
    )


def start_nginx(
    binary: str,
    prefix: Path,
    *,
    upstream: str,
    extra_server_directives: str = "",
    extra_http_directives: str = "",
) -> NginxProcess:
    """Start nginx in ``prefix`` on a free port, retrying with another port if it was taken."""
    for _attempt in range(_PORT_ATTEMPTS):
        port = _free_port()
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        for stale in ("nginx.pid", "error.log", "stderr.log"):
            (prefix / stale).unlink(missing_ok=True)
        config = write_nginx_config(
            prefix,
            port=port,
            upstream=upstream,
            extra_server_directives=extra_server_directives,
            extra_http_directives=extra_http_directives,
        )
        with (prefix / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [
                    binary,
                    "-p",
                    str(prefix),
                    "-c",
                    str(config),
                    "-e",
                    str(prefix / "error.log"),  # the log used before the config is read
                    "-g",
                    "daemon off;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Its own session: a Ctrl-C of pytest does not hit nginx before the fixture's
                # teardown stops it, and a hung master can be killed with its workers.
                start_new_session=True,
            )
        nginx = NginxProcess(process, prefix, port)
        if _wait_until_listening(nginx, time.monotonic() + _NGINX_START_TIMEOUT):
            return nginx
        nginx.stop()
        if "Address already in use" not in nginx.log():
            pytest.fail(f"nginx exited at start (exit {process.returncode}):\n{nginx.log()}")
    pytest.fail(f"nginx found no free port in {_PORT_ATTEMPTS} attempts:\n{nginx.log()}")


class NginxFactory(Protocol):
    def __call__(self, extra_server_directives: str = "", *, upstream: str | None = None) -> str:
        """Base URL of a running nginx with these directives (started once, then reused)."""
        ...


@pytest.fixture(scope="session")
def nginx_factory(
    nginx_binary: str,
    demo_targets: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NginxFactory]:
    """Start real nginx reverse proxies; all of them are stopped when the session ends.

    ``extra_server_directives`` go into the ``server { }`` block, so a test can plant a
    difference (``add_header X-Planted yes;``, ``gzip on;``, ``proxy_hide_header ETag;``).
    ``upstream`` defaults to the demo origin.
    """
    running: dict[tuple[str, str], NginxProcess] = {}

    def factory(extra_server_directives: str = "", *, upstream: str | None = None) -> str:
        target = upstream or demo_targets["origin"]
        key = (extra_server_directives, target)
        if key not in running:
            prefix = tmp_path_factory.mktemp("nginx")
            running[key] = start_nginx(
                nginx_binary,
                prefix,
                upstream=target,
                extra_server_directives=extra_server_directives,
            )
        return running[key].url

    try:
        yield factory
    finally:
        for nginx in running.values():
            nginx.stop()


@pytest.fixture(scope="session")
def nginx_proxy(nginx_factory: NginxFactory) -> str:
    """Base URL of a plain nginx reverse proxy in front of the demo origin."""
    return nginx_factory()


# --------------------------------------------------------------------------------------------
# HAProxy: a second proxy of a different make (tests/haproxy.py), for the edge suite
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def haproxy_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the haproxy executable, apt-installing the Debian package if it is missing."""
    found = find_haproxy()
    if found:
        return found
    lock = tmp_path_factory.getbasetemp().parent / "flamingo-haproxy-install.lock"
    with _file_lock(lock):
        found = find_haproxy()
        if found is None:
            if shutil.which("apt-get") is None or os.geteuid() != 0:
                pytest.fail(
                    "haproxy is not installed; run `apt-get install haproxy`", pytrace=False
                )
            _run_apt(["update"])
            result = _run_apt(["install", "-y", "--no-install-recommends", "haproxy"])
            found = find_haproxy()
            if found is None:
                pytest.fail(f"could not install haproxy:\n{_tail(result.stdout + result.stderr)}")
        return found


# --------------------------------------------------------------------------------------------
# Fault servers (tests/faultserver.py): raw sockets on 127.0.0.1, stopped after each test
# --------------------------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[ServerFactory]:
    """Start fault/echo servers with ``servers(name=...)``; all are stopped after the test."""
    with running() as start:
        yield start


# --------------------------------------------------------------------------------------------
# Headless Chromium (Debian's, driven by Playwright; `playwright install` is never run)
# --------------------------------------------------------------------------------------------

#: Launch arguments for the sandbox-less, offline machine the tests run on.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's chromium: scripts/test.sh installs it, so without it a test fails, never skips."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed (bash scripts/test.sh installs it from Debian)")
    return path
