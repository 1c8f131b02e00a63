"""Sizes as virsh writes them: parse, format, and refuse what is malformed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoballoon.errors import InvalidValueError
from autoballoon.units import MAX_BYTES, GiB, KiB, MiB, TiB, format_size, human, parse_percent, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("524288", 524288 * KiB),  # bare number is KiB, as virsh
        ("0", 0),
        ("512M", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("512mib", 512 * MiB),
        ("2G", 2 * GiB),
        ("2 GiB", 2 * GiB),
        ("1T", TiB),
        ("1TiB", TiB),
        ("4K", 4 * KiB),
        ("4KiB", 4 * KiB),
        ("1KB", 1000),
        ("1MB", 1000**2),
        ("2GB", 2 * 1000**3),
        ("1TB", 1000**4),
        ("100B", 100),
        ("100bytes", 100),
        ("1.5G", 3 * GiB // 2),
        ("1.5K", 1536),
    ],
)
def test_parse_accepts_virsh_forms(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4X",
        "-1G",
        "",
        " ",
        "1.5.2G",
        "G",
        "1 G B",
        "0x10",
        "1e9",
        "1,5G",
        "NaN",
        "inf",
        "0.1K",
        "99999999999999999999T",
        "1" + "0" * 30,
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidValueError) as e:
        parse_size(text)
    message = str(e.value)
    assert repr(text) in message  # names the input
    assert "KiB" in message or "bytes" in message  # says what is accepted


def test_parse_rejects_non_text() -> None:
    with pytest.raises(InvalidValueError):
        parse_size(True)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        parse_size(-5)
    with pytest.raises(InvalidValueError):
        parse_size(None)  # type: ignore[arg-type]


def test_default_unit_is_configurable() -> None:
    assert parse_size("1000", default_unit=1) == 1000
    assert parse_size(3, default_unit=MiB) == 3 * MiB


@given(st.integers(min_value=0, max_value=MAX_BYTES))
def test_format_then_parse_round_trips(n: int) -> None:
    assert parse_size(format_size(n)) == n


@given(
    st.integers(min_value=0, max_value=MAX_BYTES // GiB),
    st.sampled_from(["K", "M", "G", "KiB", "MiB", "GiB"]),
)
def test_parse_is_linear_in_the_number(n: int, unit: str) -> None:
    scale = {"K": KiB, "M": MiB, "G": GiB}[unit[0]]
    if n * scale <= MAX_BYTES:
        assert parse_size(f"{n}{unit}") == n * scale


@given(st.text(alphabet="0123456789.-+eEX ", min_size=1, max_size=12))
def test_parse_never_returns_garbage(text: str) -> None:
    try:
        value = parse_size(text)
    except InvalidValueError:
        return
    assert isinstance(value, int)
    assert 0 <= value <= MAX_BYTES


@given(st.integers(min_value=MAX_BYTES + 1, max_value=MAX_BYTES * 1000))
def test_huge_values_are_refused(n: int) -> None:
    with pytest.raises(InvalidValueError):
        parse_size(f"{n}B")


def test_human_is_approximate_and_handles_unknown() -> None:
    assert human(None) == "-"
    assert human(1536 * MiB) == "1.5 GiB"
    assert human(12) == "12 B"


def test_percent() -> None:
    assert parse_percent("20") == pytest.approx(0.2)
    assert parse_percent("20%") == pytest.approx(0.2)
    for bad in ("-1", "abc", "2000", ""):
        with pytest.raises(InvalidValueError):
            parse_percent(bad)
