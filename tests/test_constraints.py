"""One validation: every number the daemon runs on carries its range in its type, and nothing that
passes it can crash the loop.

The ranges live in :mod:`autoballoon.constraints`; ``Tunables``, ``HealthTunables`` and ``GuestPolicy``
check them when made. The last test is the promise the config makes: whatever tunables are accepted, the
controller survives its ticks (before, ``jump_half_life_s = 0``, ``target_align = "0B"`` and
``demand_decay_s = 0`` were accepted and then divided by zero).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoballoon.config import DaemonConfig
from autoballoon.constraints import (
    MAX_SECONDS,
    SHARES,
    ConstraintError,
    Range,
    field_ranges,
)
from autoballoon.controller import Controller
from autoballoon.health import HealthTunables
from autoballoon.journal import Journal
from autoballoon.model import GuestPolicy
from autoballoon.tunables import Tunables
from autoballoon.units import GiB, MiB
from tests.helpers.simhost import sim_backend

VALIDATED = (Tunables, HealthTunables, GuestPolicy)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "5", None, 2.0])
def test_a_whole_range_refuses_non_numbers_nan_inf_bools_and_floats(value: object) -> None:
    assert not SHARES.accepts(value)
    with pytest.raises(ValueError, match="whole number from 1 to 1000000"):
        SHARES.coerce(value)


def test_open_and_closed_ends() -> None:
    r = Range(0, 1, high_open=True, unit="fraction")
    assert r.accepts(0) and r.accepts(0.999) and not r.accepts(1.0) and not r.accepts(-0.0001)
    assert r.describe() == "a fraction from 0 to less than 1"
    assert Range(0, 10, low_open=True).describe() == "a number above 0 and at most 10"


@pytest.mark.parametrize("cls", VALIDATED, ids=lambda c: c.__name__)
def test_every_numeric_field_has_a_range(cls: type) -> None:
    # field_ranges raises TypeError for a number without one: a new tunable cannot be left unbounded.
    names = {name for name, _, _ in field_ranges(cls)}
    numeric = {f.name for f in dataclasses.fields(cls) if f.type not in ("bool", "str")}
    assert numeric <= names | {"exclude", "enabled", "disable_balloon"}


def _outside(rng: Range) -> list[Any]:
    below = rng.low if rng.low_open else (rng.low - 1 if rng.whole else rng.low - 1e-9)
    above = rng.high if rng.high_open else (rng.high + 1 if rng.whole else rng.high * 1.001 + 1e-9)
    return [below, above, float("nan"), float("inf"), True]


@pytest.mark.parametrize(
    ("cls", "name", "bad"),
    [(cls, name, bad) for cls in VALIDATED for name, rng, _ in field_ranges(cls) for bad in _outside(rng)],
    ids=str,
)
def test_no_validated_value_has_a_field_outside_its_range(cls: type, name: str, bad: Any) -> None:
    with pytest.raises(ConstraintError) as e:
        cls(**{name: bad})
    assert e.value.field == name and e.value.accepted


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jump_half_life_s": 0.0}, "jump_half_life_s"),  # 0.5 ** (dt / half_life)
        ({"target_align_bytes": 0}, "target_align_bytes"),  # targets are aligned by it
        ({"demand_decay_s": 0.0}, "demand_decay_s"),  # exp(-dt / demand_decay_s)
        ({"interval_s": 1e12}, "interval_s"),  # overflowed the timer
        ({"interval_s": 0.1}, "interval_s"),  # below min_interval_s
        ({"reconnect_initial_s": 60.0}, "reconnect_max_s"),  # above reconnect_max_s
        ({"default_shares": 0}, "default_shares"),
        ({"journal_ring_size": -1}, "journal_ring_size"),  # deque(maxlen=-1) raised
    ],
)
def test_tunables_that_crashed_the_loop_cannot_be_made(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConstraintError) as e:
        Tunables(**kwargs)
    assert e.value.field == field


def test_shares_zero_has_no_meaning_anywhere() -> None:
    with pytest.raises(ConstraintError, match="shares"):
        GuestPolicy(shares=0)
    with pytest.raises(ConstraintError, match="shares"):
        Tunables(default_shares=0)


def _values(rng: Range) -> st.SearchStrategy[Any]:
    """Values inside a range, its ends (and values next to them) drawn often."""
    if rng.whole:
        low, high = int(rng.low), int(rng.high)
        edges = [low, high, low + 1, min(high, low + 1024)]
        return st.one_of(st.sampled_from(edges), st.integers(low, high))
    low, high = float(rng.low), float(rng.high)
    edges = [x for x in (low, high, math.nextafter(low, high), math.nextafter(high, low)) if rng.accepts(x)]
    inner = st.floats(low, high, exclude_min=rng.low_open, exclude_max=rng.high_open, allow_nan=False)
    return st.one_of(st.sampled_from(edges), inner)


@st.composite
def accepted(draw: st.DrawFn, cls: type) -> Any:
    """An instance of a validated class with a few fields anywhere in their ranges (the rest default);
    draws that break a rule between two fields are rejected, as the config would refuse them."""
    ranges = field_ranges(cls)
    chosen = draw(st.lists(st.sampled_from(ranges), max_size=8, unique_by=lambda r: r[0]))
    values = {name: draw(_values(rng)) for name, rng, _ in chosen}
    if cls is Tunables and "interval_s" in values:
        values["interval_s"] = min(values["interval_s"], 60.0)  # each tick steps the simulation anyway
    try:
        return cls(**values)
    except ConstraintError:
        from hypothesis import reject

        reject()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(tunables=accepted(Tunables), health=accepted(HealthTunables))
def test_a_config_that_loads_never_crashes_the_loop(tunables: Tunables, health: HealthTunables) -> None:
    backend = sim_backend()
    sim = backend.sim
    config = DaemonConfig(tunables=tunables, health=health)
    controller = Controller(backend, backend.clock, config, Journal(None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's overflow in a cast is garbage, not a number
        for _ in range(6):
            assert controller.tick() is not None  # None only when the backend failed
            sim.run(5)
    for vm in controller.status().vms:
        assert 0 < vm.target_bytes <= vm.max_bytes


def test_ranges_are_finite_so_nan_and_inf_never_pass() -> None:
    for cls in VALIDATED:
        for _, rng, _ in field_ranges(cls):
            assert math.isfinite(rng.low) and math.isfinite(rng.high)
            assert rng.high <= max(MAX_SECONDS, 2**63 - 1)
    assert GuestPolicy(min_bytes=GiB, max_bytes=512 * MiB).min_bytes == GiB  # layers may cross; ops refuses
