"""The ``sim://`` backend: a simulated host that behaves like libvirt for every layer above it.

``sim:///demo`` is the built-in scenario (``autoballoon/data/demo.toml``), ``sim:///path/to/scenario.toml``
any scenario file. Query parameters: ``speed`` (virtual seconds per real second when the controller sleeps;
default 1, real time, as a real host; ``max`` for no real waiting at all), ``warmup`` (virtual seconds
simulated at open so that guests have reported stats; default 60, at most a day) and ``seed`` (default 0).

All state lives in this process: nothing is persisted, so a change made by one ``autoballoon`` command is
gone when the next command opens ``sim:///demo`` again. Like libvirt, changes to ``<memory>`` and the
persistent ``<memballoon>`` are stored for "the next boot", which the simulator never reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from autoballoon.clock import VirtualClock
from autoballoon.constraints import Range
from autoballoon.errors import InvalidValueError, LimitError, RefusedError, UnknownVMError
from autoballoon.model import (
    BalloonChange,
    BalloonConfig,
    ChangeResult,
    GuestPolicy,
    GuestSnapshot,
    HostSnapshot,
    check_policy,
)
from autoballoon.sim import Simulation, load_scenario
from autoballoon.sim.demand import SECONDS_PER_DAY
from autoballoon.sim.scenario import Scenario
from autoballoon.units import format_size, human


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What a ``sim://`` URI asks for, with the defaults of an interactive session.

    The default speed is real time: a daemon on ``sim:///demo`` must sleep between ticks like on a real
    host, or it spins a core and writes hundreds of journal lines a second. ``speed = None`` (``max``)
    does not wait at all, for tests and benchmarks that drive the clock themselves.
    """

    scenario: str = "demo"
    speed: float | None = 1.0
    warmup: float = 60.0
    seed: int = 0


BUILTIN_DIR = "data"
QUERY_KEYS = ("speed", "warmup", "seed")
URI_FORMS = (
    "sim:///demo (built-in) or sim:///absolute/path/to/scenario.toml, optionally ?speed=&warmup=&seed="
)
#: ``?speed=`` bounds: slower than 1/100 of real time turns a 2 s tick into minutes of sleep (and 1e-300
#: overflowed the sleep); faster than a million is indistinguishable from ``max``.
SPEED = Range(0.01, 1e6)
SPEED_MAX = "max"
#: ``?warmup=`` bound: a simulated day (demand repeats after a scenario's run anyway), about a second of
#: work for the demo; 1e9 seconds ran for hours.
WARMUP = Range(0, SECONDS_PER_DAY, unit="seconds")
SEED = Range(0, 2**32 - 1, whole=True)


def parse_sim_uri(uri: str) -> SimOptions:
    """Split a ``sim://`` URI into its options; anything malformed is an error naming what is accepted."""
    parts = urlsplit(uri)
    if parts.scheme != "sim":
        raise InvalidValueError("simulator URI", uri, URI_FORMS)
    location = parts.netloc + parts.path if parts.netloc else parts.path
    if parts.netloc == "" and "/" not in parts.path.strip("/") and not parts.path.endswith(".toml"):
        location = parts.path.strip("/")
    if not location:
        raise InvalidValueError("simulator URI", uri, URI_FORMS)
    options = SimOptions(scenario=location)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidValueError("simulator URI query", parts.query, "key=value pairs joined by &") from None
    for key, value in pairs:
        if key == "speed":
            speed = None if value == SPEED_MAX else _number(key, value, SPEED)
            options = replace(options, speed=speed)
        elif key == "warmup":
            options = replace(options, warmup=_number(key, value, WARMUP))
        elif key == "seed":
            if not (value.isdigit() and SEED.accepts(int(value))):
                raise InvalidValueError("URI parameter seed", value, SEED.describe())
            options = replace(options, seed=int(value))
        else:
            raise InvalidValueError("URI parameter", key, "one of " + ", ".join(QUERY_KEYS))
    return options


def _number(key: str, value: str, rule: Range) -> float:
    try:
        number: float | None = float(value)
    except ValueError:
        number = None
    if not rule.accepts(number):
        accepted = rule.describe() + (f", or {SPEED_MAX!r} for no real waiting" if key == "speed" else "")
        raise InvalidValueError(f"URI parameter {key}", value, accepted)
    return number


def load_named_scenario(location: str) -> Scenario:
    """A built-in scenario by name (``demo``) or a scenario file by path."""
    if "/" not in location and not location.endswith(".toml"):
        builtin = resources.files("autoballoon").joinpath(BUILTIN_DIR, f"{location}.toml")
        if not builtin.is_file():
            raise InvalidValueError("built-in scenario", location, URI_FORMS)
        with resources.as_file(builtin) as path:
            return load_scenario(path)
    path = Path(location)
    if not path.is_file():
        raise InvalidValueError("scenario file", location, f"an existing TOML file; {URI_FORMS}")
    return load_scenario(path)


class SimClock(VirtualClock):
    """The backend's virtual clock: sleeping on it steps the simulation; ``wall`` matches stats stamps."""

    def __init__(self, sim: Simulation, *, speed: float | None) -> None:
        super().__init__(start=sim.time, speed=speed)
        self._epoch = sim.physics.epoch
        self.on_advance(sim.step)

    def wall(self) -> float:
        return self._epoch + self.now()


@dataclass(frozen=True, slots=True)
class _NextBoot:
    """A VM's persistent configuration, as it will be at the next boot."""

    max_bytes: int
    target_bytes: int
    vcpus: int
    balloon: BalloonConfig


class SimBackend:
    """The :class:`~autoballoon.backends.base.Backend` of a simulated host (state lives in this process).

    ``clock`` is the backend's :class:`SimClock`: a controller that sleeps on it advances the simulated
    world. ``sim`` is the :class:`~autoballoon.sim.Simulation` itself, for tests and the evaluation harness.
    """

    def __init__(self, sim: Simulation, *, uri: str = "sim:///", speed: float | None = None) -> None:
        """``speed`` None: the clock never waits (tests build backends directly this way)."""
        self.uri = uri
        self.sim = sim
        self.clock = SimClock(sim, speed=speed)
        self._next_boot: dict[str, _NextBoot] = {
            name: _NextBoot(
                max_bytes=int(sim.max[i]),
                target_bytes=int(sim.target[i]),
                vcpus=sim.vcpus(i)[0],
                balloon=sim.balloons[i],
            )
            for i, name in enumerate(sim.names)
        }

    @classmethod
    def open(cls, uri: str) -> SimBackend:
        """Build the simulated host named by ``uri`` and run its warm-up so that stats exist."""
        options = parse_sim_uri(uri)
        sim = Simulation(load_named_scenario(options.scenario), seed=options.seed)
        sim.run(options.warmup)
        return cls(sim, uri=uri, speed=options.speed)

    # ------------------------------------------------------------------------------------- reading

    def snapshot(self) -> HostSnapshot:
        return self.sim.snapshot()

    def guest(self, vm: str) -> GuestSnapshot:
        return self.sim.guest_snapshot(self._name(vm))

    def next_boot(self, vm: str) -> dict[str, object]:
        """The persistent configuration the VM will boot with (sizes in bytes)."""
        nb = self._next_boot[self._name(vm)]
        return {
            "max_bytes": nb.max_bytes,
            "target_bytes": nb.target_bytes,
            "vcpus": nb.vcpus,
            "balloon_model": nb.balloon.model,
            "autodeflate": nb.balloon.autodeflate,
            "free_page_reporting": nb.balloon.free_page_reporting,
            "stats_period": nb.balloon.stats_period,
        }

    # ------------------------------------------------------------------------------------- changing

    def set_target(self, vm: str, target_bytes: int, *, live: bool = True, config: bool = False) -> None:
        """Move the balloon target live (the driver follows over time) and/or in the next-boot config."""
        name = self._name(vm)
        i = self.sim.index(name)
        live = live or not config  # neither flag = the running VM, as libvirt's "current"
        _require_int("target", target_bytes)
        if live:
            if self.sim.balloons[i].model == "none":
                raise RefusedError(
                    f"refused: VM {name!r} has no balloon device (model='none'); its memory cannot change "
                    "while it runs; nothing was changed"
                )
            self._check_range(name, "target", target_bytes, int(self.sim.max[i]))
        if config:
            self._check_range(name, "target (next boot)", target_bytes, self._next_boot[name].max_bytes)
        if live:
            self.sim.set_target(i, target_bytes)
        if config:
            self._next_boot[name] = replace(self._next_boot[name], target_bytes=target_bytes)

    def set_max(self, vm: str, max_bytes: int) -> ChangeResult:
        """``<memory>`` is fixed while a VM runs: the new value is stored for the next boot."""
        name = self._name(vm)
        _require_int("max memory", max_bytes)
        if max_bytes <= 0:
            raise LimitError(name, "max memory", str(max_bytes), "must be above 0")
        nb = self._next_boot[name]
        running_max = int(self.sim.max[self.sim.index(name)])
        self._next_boot[name] = replace(nb, max_bytes=max_bytes, target_bytes=min(nb.target_bytes, max_bytes))
        return ChangeResult(
            live=False,
            next_boot=True,
            message=(
                f"max memory of {name} set to {human(max_bytes)} in the persistent config; "
                f"it takes effect at the next boot (running VM keeps {human(running_max)})"
            ),
        )

    def set_vcpus(self, vm: str, count: int, *, live: bool = True, config: bool = False) -> ChangeResult:
        name = self._name(vm)
        i = self.sim.index(name)
        live = live or not config
        _require_int("vCPU count", count)
        maximum = self.sim.vcpus(i)[1]
        if not 1 <= count <= maximum:
            raise LimitError(name, "vCPU count", str(count), f"must be from 1 to the maximum {maximum}")
        if live:
            self.sim.set_vcpus(i, count)
        if config:
            self._next_boot[name] = replace(self._next_boot[name], vcpus=count)
        where = " and ".join(w for w, on in (("now", live), ("at next boot", config)) if on)
        return ChangeResult(live=live, next_boot=config, message=f"{name} has {count} vCPUs {where}")

    def set_balloon(self, vm: str, change: BalloonChange) -> ChangeResult:
        """Edit the persistent ``<memballoon>``: model, autodeflate and free-page reporting apply at the next
        boot; a stats period is applied live too (as libvirt does) when the VM has a balloon."""
        name = self._name(vm)
        i = self.sim.index(name)
        if change.empty:
            raise InvalidValueError(
                "balloon change",
                "nothing",
                "at least one of model, autodeflate, free_page_reporting, stats_period",
            )
        nb = self._next_boot[name]
        balloon = nb.balloon
        for field_name in ("model", "autodeflate", "free_page_reporting", "stats_period"):
            value = getattr(change, field_name)
            if value is not None:
                balloon = replace(balloon, **{field_name: value})
        self._next_boot[name] = replace(nb, balloon=balloon)
        messages: list[str] = []
        live = False
        if change.stats_period is not None and self.sim.balloons[i].model != "none":
            self.sim.set_stats_period(i, change.stats_period)
            live = True
            messages.append(f"stats period {change.stats_period}s applied now")
        boot_fields = [
            f"{f}={getattr(change, f)}"
            for f in ("model", "autodeflate", "free_page_reporting")
            if getattr(change, f) is not None
        ]
        if change.stats_period is not None and not live:
            boot_fields.append(f"stats_period={change.stats_period}")
        if boot_fields:
            messages.append(", ".join(boot_fields) + " stored; takes effect at the next boot")
        return ChangeResult(live=live, next_boot=True, message=f"{name}: " + "; ".join(messages))

    def get_policy(self, vm: str) -> GuestPolicy:
        return self.sim.policies[self.sim.index(self._name(vm))]

    def set_policy(self, vm: str, policy: GuestPolicy) -> None:
        name = self._name(vm)
        i = self.sim.index(name)
        check_policy(policy, name, int(self.sim.max[i]))
        self.sim.policies[i] = policy

    def close(self) -> None:
        """Nothing to release: the simulated host lives and dies with this object."""

    # ------------------------------------------------------------------------------------- helpers

    def _name(self, vm: str) -> str:
        """The VM's name, checked: an unknown name (or a non-name) lists the known VMs."""
        if not isinstance(vm, str):
            raise UnknownVMError(repr(vm), list(self.sim.names))
        return self.sim.names[self.sim.index(vm)]

    @staticmethod
    def _check_range(name: str, what: str, value: int, maximum: int) -> None:
        if value < 0:
            raise LimitError(name, what, str(value), "must not be negative")
        if value > maximum:
            raise LimitError(name, what, human(value), f"above the VM's max memory {format_size(maximum)}")


def _require_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError(what, value, "a whole number")
