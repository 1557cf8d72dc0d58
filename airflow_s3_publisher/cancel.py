"""Stopping a publish from outside: what an operator's ``on_kill`` does when Airflow stops its task.

Airflow calls ``on_kill`` in the task's own process: from the SIGTERM handler of the task runner (the
task instance was marked failed or cleared, or the worker is shutting down) while ``execute`` is still
running in the same (main) thread, and after ``execution_timeout`` fired. A :class:`Cancellation`
handed to ``publish()`` makes both cases safe:

- :meth:`Cancellation.cancel` drops the queued parts and aborts every multipart upload in flight at
  once, without waiting for the parts being sent (S3 refuses them afterwards). The aborts run in a
  helper thread started beforehand, and ``cancel`` waits for them only a bounded time: called from a
  signal handler, it may have interrupted the main thread inside the very S3 client it needs;
- from then on every upload step of the publish raises
  :class:`~airflow_s3_publisher.exceptions.PublishCancelledError`
  naming what was aborted, so nothing more is sent and nothing is reported as published (a plain
  publish never writes its manifest).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

from airflow_s3_publisher.exceptions import PublishCancelledError

if TYPE_CHECKING:
    from airflow_s3_publisher.progress import LogLike
    from airflow_s3_publisher.s3 import MultipartWriter

log = logging.getLogger(__name__)

#: Seconds :meth:`Cancellation.cancel` waits for the aborts; Airflow sends SIGKILL 5 s after SIGTERM.
CANCEL_WAIT_SECONDS = 3.0
#: How often an idle helper thread checks whether its Cancellation is gone.
_HELPER_POLL_SECONDS = 5.0


class Cancellation:
    """A thread-safe stop switch for one publish (or several, one after the other).

    :param logger: where the cancellation says what it aborted; this module's logger by default.
    """

    def __init__(self, logger: LogLike | None = None) -> None:
        self._log: LogLike = logger or log
        self._lock = threading.Lock()
        # A plain bool and Events only the helper thread waits on: cancel() may run in a signal handler
        # that interrupted the main thread anywhere, so it takes no lock the main thread may hold.
        self._cancelled = False
        self._reason = ""
        self._writers: list[weakref.ref[MultipartWriter]] = []  # writers are unhashable dataclasses
        self._aborted: list[str] = []
        self._wake = threading.Event()
        self._done = threading.Event()
        self._helper: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    @property
    def aborted(self) -> list[str]:
        """``s3://bucket/key (upload <id>)`` of every multipart upload the cancellation aborted."""
        with self._lock:
            return list(self._aborted)

    def track(self, writer: MultipartWriter) -> None:
        """Abort ``writer``'s multipart upload if the publish is cancelled while it is in flight, and
        make the writer check for a cancellation before each request it starts."""
        self.check()
        writer.check = self.check
        with self._lock:
            self._writers = [ref for ref in self._writers if ref() is not None]  # drop the finished ones
            self._writers.append(weakref.ref(writer))
            if self._helper is None:  # started here, in the publishing thread, never in a signal handler
                helper = threading.Thread(
                    target=_abort_when_woken, args=(weakref.ref(self), self._wake), name="s3-publish-cancel"
                )
                helper.daemon = True
                self._helper = helper
                self._helper.start()

    def check(self, cause: BaseException | None = None) -> None:
        """Raise the cancellation's :class:`PublishCancelledError` if the publish was cancelled; else nothing.

        :param cause: the failure the cancellation provoked (chained as the error's cause), where a
            publish step failed; the cancellation is what the caller is told about.
        """
        if self._cancelled:
            raise self.error() from cause

    def error(self) -> PublishCancelledError:
        """The error every upload step raises once cancelled: why, and what was aborted."""
        aborted = self.aborted
        done = f"aborted {', '.join(aborted)}" if aborted else "no multipart upload in flight to abort"
        return PublishCancelledError(f"publishing was cancelled ({self._reason}): {done}; nothing more is uploaded")

    def cancel(self, reason: str = "cancelled by the caller", *, wait: float = CANCEL_WAIT_SECONDS) -> None:
        """Abort every multipart upload in flight and make every further upload step raise.

        Safe to call from any thread and from a signal handler, more than once (the first reason is kept).

        :param reason: why, for the log and the error, e.g. ``"the task was killed"``.
        :param wait: seconds to wait for the aborts to be sent before returning.
        """
        if not self._cancelled:
            self._reason = reason
            self._cancelled = True
        helper = self._helper
        if helper is None:
            self._log.warning("Publishing cancelled (%s): no multipart upload in flight to abort", reason)
            return
        self._wake.set()
        if not self._done.wait(wait):
            self._log.warning(
                "Publishing cancelled (%s): the multipart uploads are still being aborted after %.0f s", reason, wait
            )

    def _abort_all(self) -> None:
        try:
            with self._lock:
                writers = [writer for ref in self._writers if (writer := ref()) is not None]
            for writer in writers:
                upload_id = writer.abort_in_flight()
                if upload_id:
                    with self._lock:
                        self._aborted.append(f"s3://{writer.bucket}/{writer.key} (upload {upload_id})")
            aborted = self.aborted
            if aborted:
                self._log.warning(
                    "Publishing cancelled (%s): aborted %s; queued parts dropped, no further part is sent",
                    self._reason,
                    ", ".join(aborted),
                )
            else:
                self._log.warning("Publishing cancelled (%s): no multipart upload in flight to abort", self._reason)
        except Exception as err:  # abort_in_flight logs S3 errors itself; anything else must not vanish
            self._log.warning(
                "Publishing cancelled (%s), but aborting the multipart uploads failed: %r", self._reason, err
            )
        finally:
            self._done.set()


def _abort_when_woken(cancellation: weakref.ref[Cancellation], wake: threading.Event) -> None:
    """The helper thread: aborts when woken; ends with its Cancellation (it holds only a weak reference)."""
    while not wake.wait(_HELPER_POLL_SECONDS):
        if cancellation() is None:
            return
    alive = cancellation()
    if alive is not None:
        alive._abort_all()
