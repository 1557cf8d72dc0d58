"""The lifecycle shared by the throwaway S3 servers in ``tools/``: one subprocess on loopback.

:class:`ServerProcess` spawns the server with its stdout and stderr appended to a log file, polls it until
a readiness probe answers (launching again, up to :data:`START_ATTEMPTS` times, when it exits because a
port it was given got taken first), quotes the tail of the log in its errors, and stops it with SIGTERM,
a grace period and SIGKILL. It is a context manager, and every started server is stopped at exit.

A subclass builds the command line (in a launch callable passed to :meth:`ServerProcess._start_process`,
which calls :meth:`ServerProcess._open_log` and :meth:`ServerProcess._spawn`), says how to probe it
(:meth:`ServerProcess._ready_probe`) and where it answers (``endpoint``) and logs (``log_path``).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["START_ATTEMPTS", "PortClashError", "ServerProcess"]

#: Launches per start while the server exits because one of its ports was taken.
START_ATTEMPTS = 3
_LOG_TAIL_BYTES = 4000
_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGTERM if this (main) thread dies, e.g. on os._exit or SIGKILL."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return preexec


class PortClashError(RuntimeError):
    """The server exited because one of its ports was taken between our choice and its bind."""


class ServerProcess:
    """One server subprocess with its output in :attr:`log_path`; see the module docstring."""

    #: How startup errors name the server ("moto", "SeaweedFS").
    _server_name: ClassVar[str] = "server"
    #: How startup errors name what :meth:`_ready_probe` asks.
    _ready_request: ClassVar[str] = "ListBuckets"
    #: Lower-case log text meaning that the server exited because a port was taken.
    _port_clash_markers: ClassVar[tuple[str, ...]] = ("address already in use",)
    #: How long :meth:`stop` waits after SIGTERM before SIGKILL.
    _stop_grace_seconds: ClassVar[float] = 10.0
    #: What :meth:`stop` sends first.
    _stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    #: What :meth:`_ready_probe`'s call raises while the server is not ready yet.
    _probe_errors: ClassVar[tuple[type[Exception], ...]] = (BotoCoreError, ClientError)

    def __init__(self, workdir: Path, *, start_timeout: float) -> None:
        self._workdir = Path(workdir).resolve()
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    # ------------------------------------------------------------------ for subclasses to provide
    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def _ready_probe(self) -> Callable[[], object]:
        """A call that succeeds once the process just launched serves requests (raising ``_probe_errors`` before)."""
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Remove what a start left beside the process; runs after a failed start and on :meth:`stop`."""

    # ------------------------------------------------------------------ shared lifecycle
    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._process.pid

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the server, wait out its grace period (moto 10 s, SeaweedFS 15 s), then SIGKILL.

        Safe to call more than once.
        """
        self._terminate()
        self._cleanup()
        _LIVE.discard(self)

    def _start_process(self, launch: Callable[[int], None], *, ports_failed: str) -> None:
        """Call ``launch(attempt)`` and wait until the server is ready, again while its ports clash.

        After the last clash, RuntimeError with ``ports_failed`` followed by the log tail. On any failure the
        process is stopped and :meth:`_cleanup` runs before the error propagates.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                launch(attempt)
                self._wait_ready()
            except PortClashError:
                self._terminate()
                if attempt == START_ATTEMPTS:
                    self._cleanup()
                    raise RuntimeError(f"{ports_failed}{self._log_tail()}") from None
                continue
            except BaseException:
                self._terminate()
                self._cleanup()
                raise
            break
        _LIVE.add(self)

    def _open_log(self, header: str) -> None:
        """Open the log (once per start), note where this attempt's output begins and write ``header``."""
        if self._log_file is None:
            self._log_file = self.log_path.open("ab")
        self._log_offset = self._log_file.tell()
        self._log_file.write(header.encode())
        self._log_file.flush()

    def _spawn(self, command: Sequence[str], env: dict[str, str], *, user: str | None = None) -> None:
        """Run ``command`` in the work directory with exactly ``env`` (as ``user``, when given), its output
        going to the open log."""
        assert self._log_file is not None
        self._process = subprocess.Popen(
            command,
            cwd=self._workdir,
            env=env,
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal(),  # only calls prctl(2): safe after fork
        )

    def _wait_ready(self) -> None:
        assert self._process is not None
        probe = self._ready_probe()
        deadline = time.monotonic() + self._start_timeout
        last_error = "no answer yet"
        delay = 0.05
        while True:
            code = self._process.poll()
            if code is not None:
                tail = self._log_tail()
                if any(marker in tail.lower() for marker in self._port_clash_markers):
                    raise PortClashError(tail)
                raise RuntimeError(f"{self._server_name} exited with code {code} during startup; log tail:\n{tail}")
            try:
                probe()
            except self._probe_errors as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self._server_name} did not answer {self._ready_request} at {self.endpoint} "
                    f"within {self._start_timeout:.0f} s (last error: {last_error}); log tail:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _log_tail(self) -> str:
        """This attempt's log output, its last 4000 bytes at most."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(self._log_offset, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError as error:
            return f"<cannot read {self.log_path}: {error}>"

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(self._stop_signal)
            try:
                process.wait(timeout=self._stop_grace_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        elif process is not None:
            process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
