"""The request bodies' models and the OpenAPI description served from them: the description of each
route's body is its model's schema, and a body parses to its model or to a refusal naming the field."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest

from autoballoon.constraints import range_of
from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.server import RunningServer, serve
from autoballoon.server.payload import (
    BODIES,
    SCHEMA_REF,
    Body,
    PolicyBody,
    ReleaseBody,
    TargetBody,
    parse,
)
from autoballoon.units import GiB, MiB
from tests.helpers.server import TOKEN, FakeSource, call

#: The body each change route reads (the API's contract: a route that reads another model fails here).
ROUTE_BODIES: dict[str, type[Body]] = {
    "/api/v1/vms/{name}/target": TargetBody,
    "/api/v1/vms/{name}/policy": PolicyBody,
    "/api/v1/vms/{name}/release": ReleaseBody,
}


@pytest.fixture(scope="module")
def spec() -> Iterator[dict[str, Any]]:
    server: RunningServer = serve(FakeSource(), "127.0.0.1:0", token=TOKEN.encode())
    try:
        status, body, _ = call(server.url + "api/v1/openapi.json")
        assert status == 200
        yield body
    finally:
        server.stop()


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    prefix = SCHEMA_REF.format(model="")
    ref = schema["$ref"]
    assert ref.startswith(prefix), ref
    resolved: dict[str, Any] = spec["components"]["schemas"][ref.removeprefix(prefix)]
    return resolved


@pytest.mark.parametrize("path", sorted(ROUTE_BODIES))
def test_each_routes_request_body_is_its_models_schema(spec: dict[str, Any], path: str) -> None:
    model = ROUTE_BODIES[path]
    request_body = spec["paths"][path]["post"]["requestBody"]
    served = _resolve(spec, request_body["content"]["application/json"]["schema"])
    own = model.model_json_schema(ref_template=SCHEMA_REF)
    defs = own.pop("$defs", {})
    assert served == own
    for name, schema in defs.items():  # what the model's schema refers to is served beside it
        assert spec["components"]["schemas"][name] == schema
    assert request_body["required"] is not model.may_be_empty


def test_every_body_model_is_a_routes_and_every_post_route_has_one(spec: dict[str, Any]) -> None:
    posts = {path for path, item in spec["paths"].items() if "post" in item}
    assert posts == set(ROUTE_BODIES)
    assert set(ROUTE_BODIES.values()) == set(BODIES)


def test_the_policy_body_has_every_policy_field_with_the_policys_range() -> None:
    policy = typing.get_type_hints(GuestPolicy, include_extras=True)
    body = typing.get_type_hints(PolicyBody, include_extras=True)
    names = [f.name for f in fields(GuestPolicy)]
    assert list(PolicyBody.model_fields) == names
    for name in names:
        assert range_of(body[name])[0] == range_of(policy[name])[0], name


def test_a_policy_body_changes_only_the_fields_it_gives() -> None:
    base = GuestPolicy(min_bytes=2 * GiB, shares=2000, buffer=0.1)
    changed = parse(PolicyBody, b'{"max_bytes": "4GiB", "buffer": null}').over(base)
    assert changed == GuestPolicy(min_bytes=2 * GiB, max_bytes=4 * GiB, shares=2000)
    assert parse(PolicyBody, b'{"exclude": true}').over(base) == GuestPolicy(
        min_bytes=2 * GiB, shares=2000, buffer=0.1, exclude=True
    )


@pytest.mark.parametrize(
    ("body", "target", "force"),
    [
        (b'{"target_bytes": 1073741824}', GiB, False),
        (b'{"target_bytes": "1GiB", "force": true}', GiB, True),
        (b'{"target_bytes": "512MiB"}', 512 * MiB, False),
        (b'{"target_bytes": "2147483648"}', 2 * GiB, False),  # a bare number as text: bytes, not KiB
    ],
)
def test_a_target_body_in_every_form(body: bytes, target: int, force: bool) -> None:
    parsed = parse(TargetBody, body)
    assert (parsed.target_bytes, parsed.force) == (target, force)


@pytest.mark.parametrize(
    ("model", "body", "field", "says"),
    [
        # pydantic's lax mode would take these: a switch is true or false, a count is a JSON integer
        (TargetBody, b'{"target_bytes": 1073741824, "force": 1}', "force", "true or false"),
        (TargetBody, b'{"target_bytes": 1073741824, "force": "true"}', "force", "true or false"),
        (PolicyBody, b'{"exclude": null}', "exclude", "true or false"),
        (PolicyBody, b'{"shares": true}', "shares", "a whole number from 1 to 1000000"),
        (PolicyBody, b'{"shares": "5"}', "shares", "a whole number"),
        (PolicyBody, b'{"shares": 5.0}', "shares", "a whole number"),
        (TargetBody, b'{"target_bytes": false}', "target_bytes", "an integer of bytes"),
        (TargetBody, b'{"target_bytes": "1.5B"}', "target_bytes", "whole number of bytes"),
        # the API's forms, not the command line's (where a bare number is KiB)
        (TargetBody, b'{"target_bytes": "2 furlongs"}', "target_bytes", "(bare = bytes)"),
        (TargetBody, b'{"force": true}', "target_bytes", "a required field"),
        # the value as sent, not as parsed
        (PolicyBody, b'{"min_bytes": "1MiB"}', "min_bytes", "'1MiB': expected a size from 128MiB"),
        (PolicyBody, b'{"buffer": "150"}', "buffer", "percentage"),
        (PolicyBody, b"{}", "body", "at least one of min_bytes, max_bytes"),
        (ReleaseBody, b'{"now": true}', "now", "no such field; accepted: none"),
        (ReleaseBody, b"[]", "body", "one JSON object"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field_and_what_is_accepted(
    model: type[Body], body: bytes, field: str, says: str
) -> None:
    with pytest.raises(InvalidValueError) as refused:
        parse(model, body)
    assert refused.value.what == field
    assert says in str(refused.value)


def test_release_takes_no_body_or_an_empty_object_and_the_others_need_one() -> None:
    for body in (b"", b"  ", b"{}", b"{ }"):
        assert parse(ReleaseBody, body) == ReleaseBody()
    with pytest.raises(InvalidValueError) as refused:
        parse(TargetBody, b"")
    assert refused.value.what == "body"


def test_a_parsed_body_is_frozen() -> None:
    parsed = parse(TargetBody, b'{"target_bytes": "1GiB"}')
    with pytest.raises(ValueError, match="frozen"):
        parsed.target_bytes = 2 * GiB
