"""A target set by hand is checked once, by one rule, whichever door it comes through.

``autoballoon setmem`` (through ``ops.setmem``), the HTTP API and the controller's queue all refuse the
same sizes with the same message, naming the bound that refused it: the VM's ``<memory>``, its policy
maximum, its policy minimum or the smallest target autoballoon allows, or, for a target not forced,
what the guest uses now. And each door accepts what the others accept. Before, the CLI and the API
checked against one floor and the controller against another, so a size could pass the API's check and
then be refused by the controller, with a different message; and only the CLI refused a target below
what the guest uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from autoballoon import ops
from autoballoon.backends.sim import SimBackend
from autoballoon.config import DaemonConfig
from autoballoon.controller import Controller
from autoballoon.errors import LimitError
from autoballoon.journal import Journal
from autoballoon.model import GuestPolicy
from autoballoon.server.controller_source import ControllerSource
from autoballoon.server.tunables import TUNABLES
from autoballoon.units import GiB, MiB
from tests.helpers.server import TOKEN, asgi_client

#: Below what the demo's ``db`` uses when the doors are asked (about 3.3 GiB), above its policy minimum.
DB_BELOW_USE = 3 * GiB

#: (VM, policy set first or None, size, forced, the words the refusal must say; None: accepted).
CASES = [
    ("web", None, 9 * GiB, True, "above the VM's maximum <memory> 8GiB"),
    ("web", None, 512 * MiB, True, "below its policy minimum 1GiB"),
    ("ci", None, 100 * MiB, True, "below the smallest target autoballoon allows 128MiB"),
    ("ci", GuestPolicy(max_bytes=3 * GiB), 3584 * MiB, True, "above its policy maximum 3GiB"),
    ("ci", GuestPolicy(max_bytes=3 * GiB), 3 * GiB, False, None),
    ("db", None, DB_BELOW_USE, False, "below what the guest uses now"),
    ("db", None, DB_BELOW_USE, True, None),
    ("web", None, 1 * GiB, True, None),
]


def _refusal(call: Callable[[], object]) -> str | None:
    try:
        call()
    except LimitError as e:
        return str(e)
    return None


def _doors(vm: str, policy: GuestPolicy | None, size: int, force: bool) -> dict[str, str | None]:
    """What each door says to the same request, on three fresh simulated hosts (one per door, so that
    an accepted change at one door does not move the others)."""
    answers: dict[str, str | None] = {}
    cli = SimBackend.open("sim:///demo")
    if policy is not None:
        cli.set_policy(vm, policy)
    answers["cli"] = _refusal(lambda: ops.setmem(cli, vm, size, live=True, force=force))
    for door in ("controller", "api"):
        backend = SimBackend.open("sim:///demo")
        if policy is not None:
            backend.set_policy(vm, policy)
        controller = Controller(backend, backend.clock, DaemonConfig(), Journal())
        controller.tick()
        if door == "controller":
            answers[door] = _refusal(partial(controller.submit_target, vm, size, force=force))
            continue
        source = ControllerSource(controller, TUNABLES)
        source.on_tick(controller)
        client = asgi_client(source, TOKEN, submit_wait_s=0.05)
        answer = client.post(
            f"/api/v1/vms/{vm}/target",
            json={"target_bytes": size, "force": force},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        if answer.status_code in (200, 202):
            answers[door] = None
        else:
            assert answer.status_code == 422, answer.text
            answers[door] = str(answer.json()["error"]["message"])
    return answers


@pytest.mark.parametrize(("vm", "policy", "size", "force", "words"), CASES)
def test_every_door_refuses_the_same_sizes_with_the_same_words(
    vm: str, policy: GuestPolicy | None, size: int, force: bool, words: str | None
) -> None:
    answers = _doors(vm, policy, size, force)
    if words is None:
        assert answers == {"cli": None, "controller": None, "api": None}
        return
    for door, said in answers.items():
        assert said is not None and words in said and "nothing was changed" in said, (door, said)
    assert len(set(answers.values())) == 1, answers  # one rule, one message
