"""The contenders the harness compares: every daemon policy, driven as the daemon drives it, and the oracle.

A policy is the daemon's (:class:`autoballoon.policy.Policy`, registered in
:data:`autoballoon.policy.POLICIES`). What the runner drives is a :class:`Contender`: an object with a
``name``, an ``interval_s`` (how often the runner calls it, in virtual seconds) and ``tick(now,
snapshot)`` that returns new targets: a mapping of VM name to bytes (only the VMs that change), or a full
NumPy array indexed like the simulation's guests. Every daemon policy, ``static`` included, is a
:class:`DaemonPolicy`: the one tick and safety gate of :mod:`autoballoon.policy.tick`, so the evaluation
measures what the daemon would do and not a second copy of it. The :class:`Oracle` is the only contender
that is not a daemon policy: it knows each guest's future demand, so it exists only here, as the yardstick
of the others' efficiency.

Each contender runs at its own interval: the default and static policies at the controller's interval,
MOM every 5 s (sampling; it decides on every second sample), Proxmox every 10 s, the oracle every
simulation step.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from autoballoon import policy as daemon_policy
from autoballoon.config import parse_config
from autoballoon.errors import InvalidValueError
from autoballoon.health import DEFAULT_HEALTH, HealthTunables
from autoballoon.model import HostSnapshot, Plan
from autoballoon.policy import tick
from autoballoon.sim.engine import Simulation
from autoballoon.tunables import DEFAULT_TUNABLES, Tunables

I64 = npt.NDArray[np.int64]
Targets = Mapping[str, int] | I64


class Contender(Protocol):
    """What the runner drives: a daemon policy (:class:`DaemonPolicy`) or the :class:`Oracle`.
    ``snapshot`` is None when ``needs_snapshot`` is False (the oracle)."""

    name: str
    interval_s: float
    needs_snapshot: bool

    def tick(self, now: float, snapshot: HostSnapshot | None) -> Targets: ...


@dataclass(frozen=True, slots=True)
class OracleTunables:
    """How the oracle plans. It knows the future, so its only parameters are physical margins."""

    #: It sets each target to the highest demand over this many seconds ahead, so a balloon that takes
    #: a moment to deflate is out of the way before the demand arrives.
    lookahead_s: float = 5.0


DEFAULT_ORACLE = OracleTunables()


def oracle_ahead_rows(step_s: float, latency_s: float, tunables: OracleTunables = DEFAULT_ORACLE) -> int:
    """How many simulation steps ahead the oracle plans: its lookahead, and never less than the step its
    target waits for the driver (the balloon latency, rounded up to whole steps) plus the step the demand
    then reaches. At a 1 s step the lookahead is the larger; at a 10 s step (a multi-day scenario) a
    target set now moves only from the next step, while that step already holds the demand of the one
    after, so a lookahead of one step would leave the oracle a step short and OOM-kill its guests."""
    return max(math.ceil(tunables.lookahead_s / step_s), math.ceil(latency_s / step_s - 1e-9) + 1)


def oracle_headroom(sim: Simulation) -> I64:
    """The fixed minimal headroom a guest needs beyond its workload: kernel, pinned page cache and the
    kernel's free watermark. Below ``demand + headroom`` the simulated guest swaps."""
    return np.asarray(sim.headroom, dtype=np.int64)


def oracle_targets(
    future_demand: I64, headroom: I64, floor: I64, ceiling: I64, balloonable: npt.NDArray[np.bool_]
) -> I64:
    """Pure core of the oracle: the highest coming demand plus headroom, within ``[floor, ceiling]``.

    ``future_demand`` has one row per future time and one column per guest. Guests that must not be
    ballooned (``balloonable`` False: a guest that storms its CPU when ballooned) stay at their ceiling.
    """
    want = future_demand.max(axis=0) + headroom
    want = np.minimum(np.maximum(want, floor), ceiling)
    return np.where(balloonable, want, ceiling).astype(np.int64)


#: The oracle's name: the one contender that is not a daemon policy.
ORACLE = "oracle"


class Oracle:
    """Knows each guest's future demand (from the scenario's traces) and allocates just that: not a
    policy a daemon could run, only the measure of how much the ones it can run leave unclaimed."""

    name = ORACLE
    needs_snapshot = False

    def __init__(self, sim: Simulation, tunables: OracleTunables = DEFAULT_ORACLE) -> None:
        self.sim = sim
        self.interval_s = sim.scenario.run.step
        n_ahead = oracle_ahead_rows(self.interval_s, sim.physics.balloon_latency_s, tunables) + 1
        self._ahead = np.arange(n_ahead, dtype=np.float64) * self.interval_s
        self._headroom = oracle_headroom(sim)
        guests = sim.scenario.guests
        self._floor = np.array([g.policy.min_bytes or 0 for g in guests], dtype=np.int64)
        self._ceiling = np.array(
            [min(g.max, g.policy.max_bytes or g.max) for g in guests], dtype=np.int64
        ).reshape(len(guests))
        self._balloonable = np.array(
            [not (g.cpu_storm or g.policy.exclude or g.balloon == "none") for g in guests], dtype=np.bool_
        ).reshape(len(guests))

    def tick(self, now: float, snapshot: HostSnapshot | None) -> Targets:
        future = self.sim.demand_at(now + self._ahead)
        return oracle_targets(future, self._headroom, self._floor, self._ceiling, self._balloonable)


class DaemonPolicy:
    """A daemon policy (any of :data:`autoballoon.policy.POLICIES`) exactly as the controller runs it: the
    health guard observes each snapshot, then the policy decides with the guard's state, at the policy's
    own interval, and its plan passes the safety gate. The harness applies the targets the gated plan's
    actions set."""

    needs_snapshot = True

    def __init__(self, policy: daemon_policy.Policy, health: HealthTunables = DEFAULT_HEALTH) -> None:
        self.policy = policy
        self.name = policy.name
        self.health = health
        self.interval_s = policy.interval_s
        self._state = tick.start(policy)

    def plan(self, snapshot: HostSnapshot) -> Plan:
        """The gated plan for ``snapshot``; the state it leaves is kept for the next."""
        done = tick.step(
            self.policy, snapshot, self._state, self.policy.tunables, health_tunables=self.health
        )
        self._state = done.state
        return done.plan

    def tick(self, now: float, snapshot: HostSnapshot | None) -> Targets:
        assert snapshot is not None
        return {a.vm: a.new_target for a in self.plan(snapshot).actions}


#: Contender names in the order reports show them: the daemon's policies, then the oracle.
CONTENDERS: tuple[str, ...] = (*daemon_policy.POLICIES, ORACLE)


def _toml_value(text: str) -> object:
    """A ``--set`` value as TOML reads it (``0.15`` a number, ``64M`` a string), for the config parser."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(base: Tunables, assignments: tuple[str, ...]) -> Tunables:
    """``("buffer=0.15", "shrink_rate_per_s=0.05")`` applied over ``base``.

    Names and values are those of the config file's ``[tunables]`` table (sizes carry a unit, ``64M``;
    a ``_bytes`` suffix is accepted too), validated by the same code, so ``--set`` accepts exactly what
    the daemon's config accepts and refuses the rest with the list of known names.
    """
    raw: dict[str, object] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip().removesuffix("_bytes")
        if not sep or not key:
            raise InvalidValueError("--set", item, "NAME=VALUE, for example buffer=0.15 or min_headroom=64M")
        raw[key] = _toml_value(value.strip())
    if not raw:
        return base
    try:
        parsed = parse_config({"tunables": raw}).tunables
    except InvalidValueError as e:
        name = e.what.removeprefix("config key 'tunables.").rstrip("'")
        raise InvalidValueError(f"--set {name}", e.value, e.accepted) from None
    changed = {
        f.name: getattr(parsed, f.name) for f in fields(Tunables) if f.name.removesuffix("_bytes") in raw
    }
    return replace(base, **changed)


ContenderFactory = Callable[[Simulation], Contender]


def factory(name: str, tunables: Tunables = DEFAULT_TUNABLES) -> ContenderFactory:
    """A function building a fresh contender of that name for one simulation run."""
    if name == ORACLE:
        return Oracle
    build = daemon_policy.POLICIES.get(name)
    if build is None:
        raise daemon_policy.unknown_policy(name, CONTENDERS)
    return lambda sim: DaemonPolicy(build(tunables))
