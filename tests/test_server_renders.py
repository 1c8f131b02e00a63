"""The server's shared renderings: one thread renders what every client asks for at the same time."""

from __future__ import annotations

import threading
import time

from autoballoon.server.renders import Renders


def test_a_client_waiting_on_a_rendering_takes_it_even_if_the_state_moved_on_meanwhile() -> None:
    """Behind a slow rendering, a waiter takes what was rendered after it asked instead of rendering
    again for a newer state (on a fast simulated host every waiter re-rendered in turn, until the
    soak's clients timed out); a later request for a newer state is rendered afresh."""
    renders = Renders()
    started, calls = threading.Event(), []

    def slow(tag: str) -> bytes:
        calls.append(tag)
        started.set()
        time.sleep(0.2)
        return tag.encode()

    first = threading.Thread(target=lambda: renders.get("k", 1, lambda: slow("v1")))
    first.start()
    started.wait(5)
    got = renders.get("k", 2, lambda: slow("v2"))  # asked while v1 was being rendered, for version 2
    first.join(5)
    assert got == b"v1" and calls == ["v1"]
    assert renders.get("k", 2, lambda: slow("v2")) == b"v2"  # asked afterwards: rendered for version 2
    assert calls == ["v1", "v2"]
    assert renders.get("k", 2, lambda: slow("again")) == b"v2"  # same version: from the cache
