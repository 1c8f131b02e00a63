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
import functools
import logging
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, create_model

from autoballoon.constraints import BUFFER, MAX_SECONDS, ConstraintError, range_of
from autoballoon.errors import InvalidValueError, LimitError
from autoballoon.health import HealthTunables
from autoballoon.model import GuestPolicy, check_policy
from autoballoon.state import DEFAULT_STATE_PATH
from autoballoon.tunables import Tunables
from autoballoon.units import BUFFER_FORMS, parse_buffer, parse_percent, parse_size

log = logging.getLogger("autoballoon.config")

#: Used when ``--config`` is not given and this file exists.
DEFAULT_CONFIG_PATH = Path("/etc/autoballoon/autoballoon.toml")
#: The table of the health guard (the CPU-storm and hot-host watch), and the name it had before: "guard"
#: also meant the safety rules, so one word now names it everywhere. The old name is still read, with
#: a warning, so that an existing file keeps working.
HEALTH_TABLE = "health"
OLD_HEALTH_TABLE = "guard"

SIZE_FORMS = "a string with a unit: '512MiB', '2GiB' (powers of 1024), '1GB' (powers of 1000), '4096B'"
FRACTION_FORMS = "a fraction like 0.2 or a percentage string like '20%'"
OnExit = Literal["hold", "restore"]
RestoreTo = Literal["max", "start"]


def _size(value: Any) -> Any:
    """A size string with a unit becomes bytes; a bare number is refused rather than guessed at."""
    if isinstance(value, str) and value.strip() and not value.strip()[-1].isdigit():
        return parse_size(value)
    raise ValueError(SIZE_FORMS)


def _fraction(value: Any) -> Any:
    """``'20%'`` becomes 0.2; a number passes on to its range; any other string is refused."""
    if isinstance(value, str):
        if not value.strip().endswith("%"):
            raise ValueError(FRACTION_FORMS)
        return parse_percent(value)
    return value


def _buffer(value: Any) -> Any:
    """A buffer: a fraction from 0 to 1 or ``'20%'``, as on the command line and in the API."""
    try:
        return parse_buffer(value)
    except InvalidValueError as e:
        raise ValueError(BUFFER_FORMS) from e


def _config_type(annotation: Any) -> Any:
    """The TOML type of a dataclass field: its own range (:mod:`autoballoon.constraints`), after the text
    forms a config file may use (sizes with a unit, percentages); unset (None) is always allowed."""
    rng, _ = range_of(annotation)
    if rng is None:  # a switch or a word: exactly that type, no coercion (``enabled = "yes"`` is refused)
        base = next(a for a in typing.get_args(annotation) or (annotation,) if a is not type(None))
        return Annotated[base, Strict()] | None
    kind = int if rng.whole else float
    if rng is BUFFER:  # one form on every face (see parse_buffer), not any fraction's range
        return Annotated[kind, rng, BeforeValidator(_buffer)] | None
    sizes = [BeforeValidator(_size)]
    parse = {"bytes": sizes, "bytes/s": sizes, "fraction": [BeforeValidator(_fraction)]}.get(rng.unit, [])
    return Annotated[kind, rng, *parse] | None


def _key(name: str) -> str:
    """The TOML key of a field: its name without ``_bytes`` (the value then carries a unit)."""
    return name.replace("_bytes", "")


class _Table:
    """One TOML table read into the fields of a validated dataclass (``Tunables``, ``HealthTunables``,
    ``GuestPolicy``): every key, its type and its range come from the dataclass, so the config accepts
    exactly what the dataclass does and refuses the rest with the same words."""

    def __init__(
        self,
        cls: type,
        title: str,
        *,
        only: tuple[str, ...] | None = None,
        skip: tuple[str, ...] = (),
        prefix: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        names = [f.name for f in fields(cls) if (only is None or f.name in only) and f.name not in skip]
        #: TOML key -> field name; a field's key is its name less ``prefix`` and ``_bytes``.
        self.fields = {_key(n.removeprefix(prefix)): n for n in names}
        spec: dict[str, Any] = {key: (_config_type(hints[name]), None) for key, name in self.fields.items()}
        for key, kind in (extra or {}).items():
            spec[key] = (kind, None)
        self.model: type[BaseModel] = create_model(
            title, __config__=ConfigDict(extra="forbid", frozen=True), **spec
        )

    def read(self, raw: Any, prefix: str) -> dict[str, Any]:
        """The values the table sets (None = unset), by field name (extra keys by their own)."""
        if not isinstance(raw, Mapping):
            raise InvalidValueError(f"config key {prefix!r}", raw, "a table, like [" + prefix + "]")
        try:
            parsed = self.model.model_validate(raw)
        except ValidationError as e:
            raise _refuse(e, prefix, raw, known=sorted(self.model.model_fields)) from None
        return {self.fields.get(k, k): v for k, v in parsed.model_dump().items() if v is not None}

    def key(self, prefix: str, name: str) -> str:
        """``config key 'tunables.target_align'`` for the field ``target_align_bytes``."""
        keys = {n: k for k, n in self.fields.items()}
        return f"config key '{prefix}.{keys.get(name, name)}'"


@functools.cache
def _tables() -> dict[str, _Table]:
    """Built on first use (a CLI command that reads no config never pays for the models)."""
    host = ("host_reserve_bytes", "host_budget_bytes")  # [host] reserve and budget
    return {
        "tunables": _Table(Tunables, "Tunables", skip=host),
        "host": _Table(Tunables, "Host", only=host, prefix="host_"),
        HEALTH_TABLE: _Table(HealthTunables, "Health"),
        "vm": _Table(
            GuestPolicy,
            "VM",
            extra={"os": Literal["linux", "windows", "other"] | None},  # when libvirt cannot tell
        ),
    }


class ConfigFile(BaseModel):
    """The file as written: the top-level keys; each table is read by its :class:`_Table`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Annotated[float, Strict(False), Field(allow_inf_nan=True)] | None = None
    journal: Annotated[str, Strict()] | None = None
    state: Annotated[str, Strict(), Field(min_length=1)] | None = None
    on_exit: OnExit = "hold"
    restore_to: RestoreTo = "max"
    manage: list[Annotated[str, Strict()]] | None = None
    host: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)
    #: ``[health]`` under its old name; None when the file does not have it.
    guard: dict[str, Any] | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    tunables: dict[str, Any] = Field(default_factory=dict)
    vm: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``autoballoon run`` needs besides the backend, validated."""

    tunables: Tunables = field(default_factory=Tunables)
    journal_path: str | None = None
    #: Where the daemon keeps what it must remember across restarts (:mod:`autoballoon.state`).
    state_path: str = str(DEFAULT_STATE_PATH)
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
        """This config with another interval (``--interval``), refused outside what the config accepts."""
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
    """An interval from the config or ``--interval``: from the minimum to a year (a longer wait overflows
    no timer any more, but means the daemon does nothing)."""
    if not (tunables.min_interval_s <= seconds <= MAX_SECONDS):
        raise InvalidValueError(
            what, seconds, f"a number of seconds from {tunables.min_interval_s:g} to {MAX_SECONDS:.15g}"
        )


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _refuse(
    error: ValidationError, prefix: str, raw: Mapping[str, Any], known: list[str] | None = None
) -> InvalidValueError:
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
        accepted = "one of " + ", ".join(known) if known else "a known key (see contrib/autoballoon.toml)"
        return InvalidValueError(f"config key {key!r}", value, accepted)
    return InvalidValueError(f"config key {key!r}", value, msg)


def _section(table: _Table, raw: Any, prefix: str) -> tuple[GuestPolicy, str | None]:
    """``[defaults]`` or one ``[vm."name"]``: its policy, checked as a whole, and the OS it names."""
    values = table.read(raw, prefix)
    os_type = values.pop("os", None)
    try:
        policy = GuestPolicy(**values)
        check_policy(policy)
    except ConstraintError as e:  # pragma: no cover - the table's types hold the same ranges
        raise InvalidValueError(table.key(prefix, e.field), e.value, e.accepted) from None
    except LimitError as e:
        raise InvalidValueError(
            f"config key '{prefix}.min'", raw.get("min"), "a size not " + e.limit
        ) from None
    return policy, os_type


def _health(parsed: ConfigFile, table: _Table, source: str | None) -> HealthTunables:
    """``[health]``, or the same table under its old name ``[guard]`` (warned about, once per reading of
    the file); both at once is refused, since which one wins would be a guess. Refusals name the table
    as the file writes it."""
    name, raw = HEALTH_TABLE, parsed.health
    if parsed.guard is not None:
        where = f"config file {source}" if source else "the config"
        if HEALTH_TABLE in parsed.model_fields_set:
            raise InvalidValueError(
                f"config key {OLD_HEALTH_TABLE!r}",
                parsed.guard,
                f"only [{HEALTH_TABLE}]: [{OLD_HEALTH_TABLE}] is its old name; move its keys into "
                f"[{HEALTH_TABLE}]",
            )
        log.warning(
            "%s: the [%s] table is now called [%s]; rename it (it is still read as [%s] for now)",
            where,
            OLD_HEALTH_TABLE,
            HEALTH_TABLE,
            HEALTH_TABLE,
        )
        name, raw = OLD_HEALTH_TABLE, parsed.guard
    values = table.read(raw, name)
    try:
        return HealthTunables(**values)
    except ConstraintError as e:
        raise InvalidValueError(table.key(name, e.field), e.value, e.accepted) from None


def parse_config(raw: Mapping[str, Any], *, source: str | None = None) -> DaemonConfig:
    """Validate a config already read from TOML (a dict)."""
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as e:
        raise _refuse(e, "", raw) from None
    tables = _tables()
    values = tables["tunables"].read(parsed.tunables, "tunables")
    values |= tables["host"].read(parsed.host, "host")
    if parsed.interval is not None:
        check_interval(
            parsed.interval, Tunables(**values) if values else Tunables(), what="config key 'interval'"
        )
        values["interval_s"] = parsed.interval
    try:
        tunables = Tunables(**values)
    except ConstraintError as e:
        where = "host" if e.field in tables["host"].fields.values() else "tunables"
        raise InvalidValueError(tables[where].key(where, e.field), e.value, e.accepted) from None
    health = _health(parsed, tables[HEALTH_TABLE], source)
    defaults, _ = _section(tables["vm"], parsed.defaults, "defaults")
    sections = {name: _section(tables["vm"], body, f"vm.{name}") for name, body in parsed.vm.items()}
    exact = {name: policy for name, (policy, _) in sections.items() if not _is_glob(name)}
    globs = tuple((name, policy) for name, (policy, _) in sections.items() if _is_glob(name))
    named = [(n, o) for n, (_, o) in sections.items() if o is not None]
    os_types = tuple(
        [(n, o) for n, o in named if not _is_glob(n)] + [(n, o) for n, o in named if _is_glob(n)]
    )
    return DaemonConfig(
        tunables=tunables,
        journal_path=parsed.journal,
        state_path=parsed.state if parsed.state is not None else str(DEFAULT_STATE_PATH),
        on_exit=parsed.on_exit,
        restore_to=parsed.restore_to,
        defaults=defaults,
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
        data = path.read_bytes()
    except OSError as e:
        raise InvalidValueError("config file", str(path), f"a readable TOML file ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidValueError(
            "config file", str(path), f"UTF-8 text, as TOML requires (byte {e.start} is not UTF-8)"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidValueError("config file", str(path), f"valid TOML ({e})") from None
    except ValueError:  # tomllib's int() of a number over 4,300 digits (Python's conversion limit)
        raise InvalidValueError("config file", str(path), "TOML numbers of at most 4300 digits") from None
    except RecursionError:
        raise InvalidValueError("config file", str(path), "valid TOML nested less deeply") from None
    return parse_config(raw, source=str(path))
