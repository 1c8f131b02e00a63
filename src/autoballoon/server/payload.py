"""Request bodies of the JSON API: one frozen pydantic model per body, and :func:`parse`, the one way a
body becomes one.

The models are the bodies' only description: they validate, and their JSON schemas are what the OpenAPI
description serves (:func:`schemas`), so the two cannot drift apart. Their fields carry the same
:mod:`autoballoon.constraints` types as the config and :class:`~autoballoon.model.GuestPolicy`, with the
forms the API also takes as text (:class:`Forms`).

Decisions, documented for API users (docs/api.md repeats them):

- A body is one JSON object; an unknown key is refused (a typo must not silently do nothing).
- Sizes are integers of **bytes**, or strings with a unit parsed like the command line's except that a
  bare number means bytes (``"2GiB"``, ``"512MiB"``, ``"2147483648"``). Floats and booleans are refused.
- ``buffer`` is a fraction from 0 to 1 as ``GET`` shows it (``0.2``), or a percentage string (``"20%"``),
  as the command line and the config file take it.
- ``null`` for a policy field means "unset: use the daemon's default"; a switch is ``true`` or ``false``
  only (pydantic's lax mode would take ``1`` or ``"yes"``).

Every refusal is an :class:`~autoballoon.errors.InvalidValueError` whose ``what`` is the JSON key (or
``body`` when the body as a whole is wrong). Hostile bodies are refused the same way, never with a 500:
the JSON is read by :func:`json_object` before pydantic sees it, because pydantic's own reader takes
``NaN`` and refuses a long integer as the whole body's fault. Refused: nesting deeper than the parser's
recursion limit, integers with thousands of digits (which Python refuses to convert, and no size or count
needs), ``NaN``/``Infinity``, and size strings longer than any real one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, models_json_schema
from pydantic_core import ErrorDetails, core_schema

from autoballoon.constraints import FRACTION, Buffer, Bytes, GuestBytes, Range, Shares
from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.units import ACCEPTED_FORMS, BUFFER_FORMS, parse_buffer, parse_size

SIZE_FORMS = 'an integer of bytes, or a string with a unit such as "2GiB" or "512MiB" (bare = bytes)'
#: The most digits a JSON integer may have: 2**63 (the largest size) has 19, so 24 refuses nothing real
#: while keeping Python from converting (and later printing) numbers thousands of digits long.
MAX_INT_DIGITS = 24
#: The longest value written as text that is read (``"9223372036854775807 bytes"`` is 25 characters).
MAX_TEXT = 40
#: How much of a bad body an error message quotes.
PREVIEW_CHARS = 60
#: Where OpenAPI keeps named schemas: a route's request body refers to its model there.
SCHEMA_REF = "#/components/schemas/{model}"


class Described:
    """A value shown in an error by what it is, not by its text (a nested array, a 5,000-digit number):
    the message stays short and printing it can neither recurse deeply nor exceed Python's digit limit."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __repr__(self) -> str:
        return self.description


def _parse_int(text: str) -> int | Described:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return Described(f"a {digits}-digit number")
    return int(text)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a refusal naming what is wrong with it."""
    try:
        value = json.loads(body.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant)
    except RecursionError:
        too_deep = Described("a JSON value nested too deep")
        raise InvalidValueError("body", too_deep, "one flat JSON object") from None
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise InvalidValueError("body", _preview(body), f"one JSON object ({e})") from None
    if not isinstance(value, dict):
        raise InvalidValueError("body", _preview(body), 'one JSON object, like {"target_bytes": 1073741824}')
    return value


def _preview(body: bytes) -> str:
    text = body[:PREVIEW_CHARS].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > PREVIEW_CHARS else "")


def _shown(value: Any) -> Any:
    """``value`` as an error message may quote it: containers by their kind, long strings cut."""
    if isinstance(value, dict):
        return Described("a JSON object")
    if isinstance(value, list):
        return Described("a JSON array")
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        return value[:PREVIEW_CHARS] + "..."
    return value


# -- the forms a value may take -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes an Annotated type's metadata
class Forms:
    """The text form a field also takes in a body (a size with a unit, a buffer as a percentage), as
    one annotation for the validator and the schema both: ``parse`` turns the text (or a number, which
    it passes on) into what the field's :class:`~autoballoon.constraints.Range` then checks, and the
    JSON schema says "the range's number, or a string of at most :data:`MAX_TEXT` characters".

    ``parse`` refuses with a ``ValueError`` saying what is accepted (or an
    :class:`~autoballoon.errors.InvalidValueError`, whose ``accepted`` is said); ``accepted`` is what a
    text too long to read is told; ``bare`` is the range a bare number must be in when it is narrower
    than the field's own (a buffer's bare number is a fraction: 150 % comes only as text).
    """

    parse: Callable[[Any], object]
    text: str
    accepted: str
    bare: Range | None = None

    def check(self, value: object) -> object:
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters: {self.accepted}")
        try:
            return self.parse(value)
        except InvalidValueError as e:
            raise ValueError(e.accepted) from None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number = (
            handler(schema) if self.bare is None else self.bare.__get_pydantic_json_schema__(schema, handler)
        )
        return {"oneOf": [number, {"type": "string", "maxLength": MAX_TEXT, "description": self.text}]}


def _size(value: object) -> object:
    """A size string in bytes (bare = bytes); an integer passes on to its range, anything else is refused."""
    if type(value) is int:
        return value
    if not isinstance(value, str):
        raise ValueError(SIZE_FORMS)
    try:
        return parse_size(value, default_unit=1)
    except InvalidValueError as e:  # its forms are the command line's, where a bare number is KiB
        raise ValueError(e.accepted.replace(ACCEPTED_FORMS, SIZE_FORMS)) from None


SIZE = Forms(_size, 'a size with a unit, such as "2GiB"; bare = bytes', SIZE_FORMS)
#: :func:`~autoballoon.units.parse_buffer` refuses what is not a number or a string (a bool included).
BUFFER = Forms(parse_buffer, 'a percentage such as "20%" (up to 1000%)', BUFFER_FORMS, bare=FRACTION)
#: ``true`` or ``false``, nothing pydantic's lax mode would turn into one.
Switch = Annotated[bool, Strict()]

# -- the bodies -------------------------------------------------------------------------------------------


class Body(BaseModel):
    """A request body: a frozen JSON object, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Whether no body at all means an empty object (a body that only exists to be extended later).
    may_be_empty: ClassVar[bool] = False


class TargetBody(Body):
    """A manual balloon target, honoured like `virsh setmem`."""

    target_bytes: Annotated[Bytes, SIZE, Field(description="the balloon target: " + SIZE_FORMS)]
    force: Switch = Field(
        False, description="set it even below what the guest uses now, as `setmem --force` does"
    )


class PolicyBody(Body):
    """The fields of the VM's policy to change: a field left out keeps its stored value, null unsets it."""

    # Each field has the type of its GuestPolicy field. (A body's docstring is its schema's description,
    # so it is written for API users.)

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    min_bytes: Annotated[GuestBytes, SIZE] | None = Field(
        None, description="the floor: never balloon below this (null: unset)"
    )
    max_bytes: Annotated[GuestBytes, SIZE] | None = Field(
        None, description="never give more than this, nor more than the VM's <memory> (null: unset)"
    )
    shares: Shares | None = Field(
        None, description="the VM's weight in the water-fill when the host is short (null: unset)"
    )
    buffer: Annotated[Buffer, BUFFER] | None = Field(
        None, description="what is kept above demand: " + BUFFER_FORMS + " (null: unset)"
    )
    exclude: Switch = Field(False, description="never touch this VM")

    @model_validator(mode="after")
    def _changes_something(self) -> PolicyBody:
        if not self.model_fields_set:
            raise ValueError("at least one of " + ", ".join(type(self).model_fields))
        return self

    def over(self, base: GuestPolicy) -> GuestPolicy:
        """``base`` with the fields this body gives replaced (checked again by ``GuestPolicy`` itself)."""
        return replace(base, **self.model_dump(include=self.model_fields_set))


class ReleaseBody(Body):
    """Nothing to say: no body, or an empty object."""

    may_be_empty = True


#: Every body the API reads, in the order their schemas are documented.
BODIES: tuple[type[Body], ...] = (TargetBody, PolicyBody, ReleaseBody)
B = TypeVar("B", bound=Body)


def parse(model: type[B], body: bytes) -> B:
    """The body as ``model``, or an :class:`InvalidValueError` naming the first field at fault, what it
    was and what is accepted."""
    raw = {} if model.may_be_empty and not body.strip() else json_object(body)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise _refusal(model, e.errors()[0], raw) from None


def _refusal(model: type[Body], error: ErrorDetails, raw: Mapping[str, Any]) -> InvalidValueError:
    """One pydantic error as the API says it: the JSON key, the value as sent (not as parsed: ``"1MiB"``,
    not 1048576), what is accepted."""
    if not error["loc"]:
        return InvalidValueError("body", _shown(raw) if raw else Described("{}"), _accepted(error))
    key = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        accepted = ", ".join(model.model_fields) or "none"
        return InvalidValueError(_shown(key), _shown(raw[key]), "no such field; accepted: " + accepted)
    if error["type"] == "missing":
        return InvalidValueError(key, None, f"a required field: {model.model_fields[key].description}")
    return InvalidValueError(key, _shown(raw[key]), _accepted(error))


#: What a refusal by pydantic's own types says is accepted (a switch is the one such type in a body).
_ACCEPTED = {"bool_type": "true or false"}


def _accepted(error: ErrorDetails) -> str:
    """What is accepted: our own validators' words, else ours for pydantic's type, else pydantic's."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return _ACCEPTED.get(error["type"], error["msg"].removeprefix("Input should be "))


@functools.cache
def schemas() -> tuple[dict[type[Body], JsonSchemaValue], dict[str, JsonSchemaValue]]:
    """Each body model's reference (``{"$ref": ...}``) and the named schemas the references point at,
    for the OpenAPI description's ``components/schemas``."""
    refs, top = models_json_schema([(m, "validation") for m in BODIES], ref_template=SCHEMA_REF)
    return {m: refs[(m, "validation")] for m in BODIES}, top.get("$defs", {})
