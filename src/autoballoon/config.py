"""The daemon's TOML config file, validated into one frozen :class:`DaemonConfig`.

A config file is input from outside: every mistake (unknown key, size without a unit, negative share)
is refused with an :class:`~autoballoon.errors.InvalidValueError` that names the key, the value and what
is accepted, and nothing starts. Sizes are strings with a unit (``"512MiB"``, ``"2GB"``): a bare number
is refused rather than guessed at, because virsh reads it as KiB and most people would mean bytes.

Per-VM policy comes from four places, most specific first (each field falls back to the next):
a change submitted at run time (API), ``[vm."exact-name"]``, the VM's own libvirt metadata, the first
``[vm."glob*"]`` that matches (in file order), then ``[defaults]``. ``exclude`` is sticky: any layer
that excludes a VM excludes it.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from autoballoon.errors import InvalidValueError
from autoballoon.health import HealthTunables
from autoballoon.model import MAX_BUFFER, GuestPolicy
from autoballoon.ops import LIMITS
from autoballoon.tunables import Tunables
from autoballoon.units import parse_percent, parse_size

#: Used when ``--config`` is not given and this file exists.
DEFAULT_CONFIG_PATH = Path("/etc/autoballoon/autoballoon.toml")

SIZE_FORMS = "a string with a unit: '512MiB', '2GiB' (powers of 1024), '1GB' (powers of 1000), '4096B'"
FRACTION_FORMS = "a fraction like 0.2 or a percentage string like '20%'"
OnExit = Literal["hold", "restore"]
RestoreTo = Literal["max", "start"]


def _size(value: Any) -> int:
    if isinstance(value, str) and value.strip() and not value.strip()[-1].isdigit():
        return parse_size(value)
    raise ValueError(SIZE_FORMS)


def _fraction(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(FRACTION_FORMS)
    if isinstance(value, str):
        if not value.strip().endswith("%"):
            raise ValueError(FRACTION_FORMS)
        return parse_percent(value)
    if isinstance(value, int | float) and 0 <= value <= MAX_BUFFER:
        return float(value)
    raise ValueError(FRACTION_FORMS + f", from 0 to {MAX_BUFFER:g}")


Size = Annotated[int, BeforeValidator(_size)]
Fraction = Annotated[float, BeforeValidator(_fraction)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class VMSection(_Strict):
    """``[defaults]`` and each ``[vm."name-or-glob"]``."""

    min: Size | None = None
    max: Size | None = None
    shares: Annotated[int, Field(ge=1, le=LIMITS.max_shares, strict=True)] | None = None
    buffer: Fraction | None = None
    exclude: bool = False
    #: The guest OS when libvirt cannot tell (no libosinfo metadata): Windows guests get a safe floor.
    os: Literal["linux", "windows", "other"] | None = None

    def policy(self) -> GuestPolicy:
        return GuestPolicy(
            min_bytes=self.min,
            max_bytes=self.max,
            shares=self.shares,
            buffer=self.buffer,
            exclude=self.exclude,
        )


Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Factor = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class HealthSection(_Strict):
    """``[guard]``: the balloon health guard (see :class:`autoballoon.health.HealthTunables`)."""

    enabled: bool | None = None
    cpu_level: Share | None = None
    sustain_s: Seconds | None = None
    window_s: Seconds | None = None
    baseline_margin: Share | None = None
    baseline_tau_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    baseline_min_s: Seconds | None = None
    quarantine_s: Seconds | None = None
    host_load_factor: Factor | None = None
    host_load_clear_factor: Factor | None = None
    host_pause_hold_s: Seconds | None = None
    thermal_throttle_increase: Annotated[int, Field(ge=1, strict=True)] | None = None
    windows_min: Size | None = None
    windows_min_fraction: Share | None = None
    disable_balloon: bool | None = None

    def tunables(self) -> HealthTunables:
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        if "windows_min" in values:
            values["windows_min_bytes"] = values.pop("windows_min")
        return HealthTunables(**values)


class HostSection(_Strict):
    reserve: Size | None = None  # fixed reserve instead of max(reserve_bytes, reserve_fraction * RAM)
    budget: Size | None = None  # fixed budget for all ballooned VMs together


def _tunable_type(name: str, default: object) -> Any:
    """The TOML type of a tunable, from its name and default: sizes, fractions, seconds, counts."""
    if "_bytes" in name:
        return Size | None
    if name.endswith("_s"):
        return Seconds | None
    if isinstance(default, float):
        return Annotated[float, Field(ge=0, allow_inf_nan=False)] if name.endswith("_per_s") else Fraction
    return Annotated[int, Field(ge=1, strict=True)]


def _tunable_key(name: str) -> str:
    """The TOML key of a tunable: its field name without ``_bytes`` (the value then carries a unit)."""
    return name.replace("_bytes", "")


_TUNABLE_KEYS: dict[str, str] = {
    _tunable_key(f.name): f.name for f in fields(Tunables) if not f.name.startswith("host_")
}
_TUNABLE_TYPES: dict[str, Any] = {
    key: _tunable_type(name, getattr(Tunables(), name)) for key, name in _TUNABLE_KEYS.items()
}


class ConfigFile(_Strict):
    """The file as written. Field names are the TOML keys."""

    interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    journal: str | None = None
    on_exit: OnExit = "hold"
    restore_to: RestoreTo = "max"
    manage: list[str] | None = None
    host: HostSection = HostSection()
    guard: HealthSection = HealthSection()
    defaults: VMSection = VMSection()
    tunables: dict[str, Any] = Field(default_factory=dict)
    vm: dict[str, VMSection] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``autoballoon run`` needs besides the backend, validated."""

    tunables: Tunables = field(default_factory=Tunables)
    journal_path: str | None = None
    on_exit: OnExit = "hold"
    #: With ``on_exit = "restore"``: every managed VM back to its max, or to the target it had at start.
    restore_to: RestoreTo = "max"
    defaults: GuestPolicy = field(default_factory=GuestPolicy)
    exact: Mapping[str, GuestPolicy] = field(default_factory=dict)
    globs: tuple[tuple[str, GuestPolicy], ...] = ()
    #: Names or globs of the only VMs to manage (None: all); the others are treated as excluded.
    manage: tuple[str, ...] | None = None
    source: str | None = None  # the file it came from, for messages
    health: HealthTunables = field(default_factory=HealthTunables)
    #: Guest OS types named in the config: (name or glob, os), exact names first, then globs in file order.
    os_types: tuple[tuple[str, str], ...] = ()

    @property
    def interval_s(self) -> float:
        return self.tunables.interval_s

    def with_interval(self, seconds: float) -> DaemonConfig:
        """This config with another interval (``--interval``), refused below the minimum."""
        check_interval(seconds, self.tunables, what="interval")
        return replace(self, tunables=replace(self.tunables, interval_s=seconds))

    def policy_for(
        self, vm: str, metadata: GuestPolicy | None = None, runtime: GuestPolicy | None = None
    ) -> GuestPolicy:
        """The effective policy of a VM: runtime > exact name > metadata > first matching glob > defaults.

        A VM outside ``manage`` (when set) is excluded whatever else says.
        """
        policy = self.defaults
        if self.manage is not None and not any(fnmatch.fnmatchcase(vm, p) for p in self.manage):
            policy = replace(policy, exclude=True)
        for pattern, glob_policy in self.globs:
            if fnmatch.fnmatchcase(vm, pattern):
                policy = glob_policy.merged_over(policy)
                break
        if metadata is not None:
            policy = metadata.merged_over(policy)
        exact = self.exact.get(vm)
        if exact is not None:
            policy = exact.merged_over(policy)
        if runtime is not None:
            policy = runtime.merged_over(policy)
        return policy

    def os_for(self, vm: str) -> str | None:
        """The guest OS the config names for a VM (``[vm."..."] os``), or None: trust the backend."""
        for pattern, os_type in self.os_types:
            if fnmatch.fnmatchcase(vm, pattern):
                return os_type
        return None


def check_interval(seconds: float, tunables: Tunables, *, what: str) -> None:
    if not (tunables.min_interval_s <= seconds < float("inf")):
        raise InvalidValueError(what, seconds, f"a number of seconds of at least {tunables.min_interval_s}")


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _refuse(error: ValidationError, prefix: str, raw: Mapping[str, Any]) -> InvalidValueError:
    """The first pydantic error as our error: the dotted key, the value, what is accepted."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
    key = ".".join([prefix, *loc] if prefix else loc)
    value: Any = raw
    for part in first["loc"]:
        value = value.get(part) if isinstance(value, Mapping) else first.get("input")
    msg = first["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if first["type"] == "extra_forbidden":
        return InvalidValueError(f"config key {key!r}", value, "a known key (see contrib/autoballoon.toml)")
    return InvalidValueError(f"config key {key!r}", value, msg)


def _tunables(raw: Mapping[str, Any], host: HostSection) -> Tunables:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _TUNABLE_KEYS:
            accepted = ", ".join(sorted(_TUNABLE_KEYS))
            raise InvalidValueError(f"config key 'tunables.{key}'", value, f"one of {accepted}")
        model = _single_value_model(key)
        try:
            values[_TUNABLE_KEYS[key]] = model.model_validate({key: value}).__dict__[key]
        except ValidationError as e:
            raise _refuse(e, "tunables", {key: value}) from None
    tunables = Tunables(**values, host_reserve_bytes=host.reserve, host_budget_bytes=host.budget)
    if tunables.reconnect_max_s < tunables.reconnect_initial_s:
        raise InvalidValueError(
            "config key 'tunables.reconnect_max_s'", tunables.reconnect_max_s, "at least reconnect_initial_s"
        )
    return tunables


_SINGLE_MODELS: dict[str, type[BaseModel]] = {}


def _single_value_model(key: str) -> type[BaseModel]:
    """A model that validates one ``[tunables]`` key, so that a refusal names exactly that key; built
    on first use and kept, since a config file names only a few of the many tunables."""
    if key not in _SINGLE_MODELS:
        _SINGLE_MODELS[key] = create_model(  # type: ignore[call-overload]
            f"Tunable_{key}", __config__=ConfigDict(extra="forbid"), **{key: (_TUNABLE_TYPES[key], ...)}
        )
    return _SINGLE_MODELS[key]


def parse_config(raw: Mapping[str, Any], *, source: str | None = None) -> DaemonConfig:
    """Validate a config already read from TOML (a dict)."""
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise _refuse(e, "", raw) from None
    tunables = _tunables(parsed.tunables, parsed.host)
    if parsed.interval is not None:
        check_interval(parsed.interval, tunables, what="config key 'interval'")
        tunables = replace(tunables, interval_s=parsed.interval)
    check_interval(tunables.interval_s, tunables, what="config key 'tunables.interval_s'")
    for name, section in [("defaults", parsed.defaults), *((f"vm.{k}", v) for k, v in parsed.vm.items())]:
        if section.min is not None and section.max is not None and section.min > section.max:
            raise InvalidValueError(
                f"config key '{name}.min'", section.min, f"a size not above {name}.max ({section.max} bytes)"
            )
    exact = {name: s.policy() for name, s in parsed.vm.items() if not _is_glob(name)}
    globs = tuple((name, s.policy()) for name, s in parsed.vm.items() if _is_glob(name))
    health = parsed.guard.tunables()
    if health.host_load_clear_factor > health.host_load_factor:
        raise InvalidValueError(
            "config key 'guard.host_load_clear_factor'",
            health.host_load_clear_factor,
            f"at most guard.host_load_factor ({health.host_load_factor:g})",
        )
    named = [(n, s.os) for n, s in parsed.vm.items() if s.os is not None]
    os_types = tuple(
        [(n, o) for n, o in named if not _is_glob(n)] + [(n, o) for n, o in named if _is_glob(n)]
    )
    return DaemonConfig(
        tunables=tunables,
        journal_path=parsed.journal,
        on_exit=parsed.on_exit,
        restore_to=parsed.restore_to,
        defaults=parsed.defaults.policy(),
        exact=exact,
        globs=globs,
        manage=tuple(parsed.manage) if parsed.manage is not None else None,
        source=source,
        health=health,
        os_types=os_types,
    )


def load_config(path: str | Path | None) -> DaemonConfig:
    """Read and validate a config file; ``None`` = the default path if it exists, else built-in defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return DaemonConfig()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidValueError("config file", str(path), f"a readable TOML file ({e.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidValueError("config file", str(path), f"valid TOML ({e})") from None
    return parse_config(raw, source=str(path))
