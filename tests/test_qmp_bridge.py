"""The QMP backend's loop bridge: synchronous calls run as coroutines on one event-loop thread, each
followed by its hang-up however it ends, bounded in time, and refused once the bridge is closed."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest

from autoballoon.backends.qmp import bridge
from autoballoon.backends.qmp.bridge import LoopBridge
from autoballoon.errors import BackendError

GRACE_S = 2.0


@pytest.fixture
def loop_bridge() -> LoopBridge:
    return LoopBridge("qmp:///test.qmp", GRACE_S)


def test_a_call_returns_its_result_and_then_hangs_up_on_the_loop_thread(loop_bridge: LoopBridge) -> None:
    seen: list[str] = []

    async def call() -> int:
        seen.append(threading.current_thread().name)
        return 42

    async def hang_up() -> None:
        seen.append("hang-up")

    try:
        assert loop_bridge.run(call(), hang_up) == 42
    finally:
        loop_bridge.close(hang_up)
    assert seen[:2] == [bridge.THREAD_NAME, "hang-up"]


def test_a_call_that_fails_still_hangs_up_and_raises_its_error(loop_bridge: LoopBridge) -> None:
    hung_up = threading.Event()

    async def call() -> None:
        raise BackendError("QEMU said no")

    async def hang_up() -> None:
        hung_up.set()

    try:
        with pytest.raises(BackendError, match="QEMU said no"):
            loop_bridge.run(call(), hang_up)
        assert hung_up.is_set()
    finally:
        loop_bridge.close(hang_up)


def test_a_call_over_its_time_is_cancelled_and_its_hang_up_waited_for(
    loop_bridge: LoopBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next call must not start before the cancelled one has closed its connections."""
    monkeypatch.setattr(bridge, "CALL_TIMEOUT_S", 0.05)
    hung_up = threading.Event()

    async def hang_up() -> None:
        await asyncio.sleep(0.1)  # longer than the call's time, shorter than the grace
        hung_up.set()

    try:
        with pytest.raises(BackendError, match=r"took longer than 0\.05 s"):
            loop_bridge.run(asyncio.sleep(10), hang_up)
        assert hung_up.is_set()
    finally:
        loop_bridge.close(hang_up)


def test_a_closed_bridge_refuses_calls_and_its_thread_is_gone(loop_bridge: LoopBridge) -> None:
    closed: list[bool] = []

    async def last() -> None:
        closed.append(True)

    thread = loop_bridge._thread
    assert thread.is_alive() and thread.name == bridge.THREAD_NAME
    loop_bridge.close(last)
    loop_bridge.close(last)  # idempotent: the last word runs once
    assert closed == [True] and loop_bridge.loop.is_closed()
    assert not thread.is_alive()

    async def call() -> None:
        raise AssertionError("never runs")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed, not left "never awaited"
        with pytest.raises(BackendError, match="is closed"):
            loop_bridge.run(call(), last)
