"""Child processes for tests and benchmarks: free ports, a process with its log, and `python -m service`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
SERVE_PREFIX = "DEEPFM_SERVE_"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (not its children) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A child process in its own process group, its output in a log file; `stop` always reaps it."""

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.close_log()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach every worker it forks
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group (as `docker kill -s` would to the container)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; reaps the process and closes the log."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.signal(signal.SIGTERM)
                if self.wait(timeout) is None:
                    self.signal(signal.SIGKILL)
                    self.proc.wait()
            # Whatever else is left in its group (a forked worker) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.close_log()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM to the process group, then its exit code (a graceful stop, as `docker stop` makes)."""
        assert self.proc is not None, f"{self.name} never started"
        self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.close_log()
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (not its children) so far."""
        assert self.proc is not None, f"{self.name} never started"
        return cpu_seconds(self.proc.pid)

    def log_lines(self) -> list[str]:
        """The lines of its log so far."""
        return self.log_path.read_text(errors="replace").splitlines()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float, expect: int = 200) -> None:
        """Poll `url` until it answers `expect`; RuntimeError (with the log's tail) otherwise."""
        deadline = time.monotonic() + timeout
        status = 0
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before {url} answered; log:\n{self.log_tail()}"
                )
            status, _ = http_get(url, timeout=1.0)
            if status == expect:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{url} still answers {status} after {timeout:.0f}s; {self.name} log:\n{self.log_tail()}")


class Server(Process):
    """`python -m service` on 127.0.0.1, configured by `env` (DEEPFM_SERVE_* settings), on a free port.

    Args:
        log_dir: where its log goes.
        env: settings over this environment's, whose own DEEPFM_SERVE_* and PROMETHEUS_MULTIPROC_DIR are dropped.
        prefix: a command to run it through (e.g. setpriv, as another user; taskset, on one CPU).
    """

    def __init__(self, log_dir: Path, env: Mapping[str, str], prefix: Sequence[str] = ()) -> None:
        self.port = free_port()
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith((SERVE_PREFIX, "PROMETHEUS_MULTIPROC_DIR"))
        }
        settings = {f"{SERVE_PREFIX}PORT": str(self.port), f"{SERVE_PREFIX}POLL_INTERVAL_S": "0", **env}
        argv = [*prefix, sys.executable, "-m", "service"]
        super().__init__(
            f"service:{self.port}", argv, cwd=REPO, env=inherited | settings, log=log_dir / f"{self.port}.log"
        )
        self.url = f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def run_server(
    log_dir: Path, env: Mapping[str, str], ready_timeout: float = 90, prefix: Sequence[str] = ()
) -> Iterator[Server]:
    """A started `Server`, ready (GET /health/ready answers 200); stopped and reaped on exit."""
    server = Server(log_dir, env, prefix)
    server.start()
    try:
        server.wait_http(f"{server.url}/health/ready", ready_timeout)
        yield server
    finally:
        server.stop()
