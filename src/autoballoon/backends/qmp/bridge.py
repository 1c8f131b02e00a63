"""The bridge from the synchronous Backend protocol to qemu.qmp's asyncio.

qemu.qmp is asyncio and the Backend protocol is not, so the backend runs one event loop in a thread of its
own and hands every call to it as a coroutine: calls from the controller's and the HTTP server's threads
are serialised there (one at a time, under one lock), and with ``?hold=on`` QEMU's events are read as they
arrive. The bridge knows nothing of QMP: it runs coroutines, bounds how long a call may take, and lets the
backend hang up after each call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from autoballoon.errors import BackendError

T = TypeVar("T")

#: A whole backend call (a snapshot of every VM runs its VMs' connections side by side).
CALL_TIMEOUT_S = 30.0
THREAD_NAME = "qmp-backend"


class LoopBridge:
    """One event loop in a daemon thread; :meth:`run` hands it a coroutine and waits for its result."""

    def __init__(self, uri: str, grace_s: float) -> None:
        """``grace_s``: how long a call cancelled on its timeout is given to finish its hang-up."""
        self.uri = uri
        self.grace_s = grace_s
        self.lock = threading.RLock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=THREAD_NAME, daemon=True)
        self._thread.start()
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, T], after: Callable[[], Awaitable[None]]) -> T:
        """Run one coroutine on the loop and wait for it (one call at a time); ``after`` runs on the loop
        when it ends, however it ends (the backend closes the connections the call opened)."""
        with self.lock:  # ``close`` takes it too: the loop is not closed under a call
            if self.closed:
                coro.close()
                raise BackendError(f"the connection to {self.uri} is closed")
            ended = threading.Event()
            future = asyncio.run_coroutine_threadsafe(_session(coro, after, ended), self.loop)
            try:
                return future.result(CALL_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                # Cancelled, the session still runs ``after``: the next call must not start before that
                # is done, or the connections it opens would be closed under it.
                future.cancel()
                ended.wait(self.grace_s)
                raise BackendError(f"QMP call on {self.uri} took longer than {CALL_TIMEOUT_S:g} s") from None

    def close(self, last: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``last`` (close every connection), then stop the loop and its thread. Idempotent."""
        if self.closed:
            return
        with self.lock:
            future = asyncio.run_coroutine_threadsafe(last(), self.loop)
            with contextlib.suppress(Exception):
                future.result(CALL_TIMEOUT_S)
            self.closed = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self.loop.close()


async def _session(coro: Awaitable[T], after: Callable[[], Awaitable[None]], ended: threading.Event) -> T:
    """One call, then ``after``, then ``ended`` is set (a call cancelled on its timeout is waited for up to
    that point)."""
    try:
        return await coro
    finally:
        try:
            await after()
        finally:
            ended.set()
