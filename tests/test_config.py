"""The TOML config: values land in the right places; every mistake is refused naming the key."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from autoballoon.config import DaemonConfig, load_config, parse_config
from autoballoon.errors import InvalidValueError
from autoballoon.model import GuestPolicy
from autoballoon.units import GiB, MiB

EXAMPLE = Path(__file__).resolve().parents[1] / "contrib" / "autoballoon.toml"


def test_full_config(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        """
interval = 1
journal = "/tmp/j.jsonl"
state = "/tmp/state.json"
on_exit = "restore"
restore_to = "start"
[host]
reserve = "1GiB"
budget = "1200MiB"
[tunables]
buffer = "25%"
min_headroom = "32MiB"
stuck_after_s = 5
[defaults]
min = "128MiB"
[vm."web-*"]
min = "256MiB"
shares = 2000
[vm."web-1"]
buffer = 0.5
[vm."db"]
exclude = true
"""
    )
    c = load_config(path)
    assert c.interval_s == 1.0 and c.journal_path == "/tmp/j.jsonl" and c.state_path == "/tmp/state.json"
    assert DaemonConfig().state_path == "/var/lib/autoballoon/state.json"
    assert (c.on_exit, c.restore_to) == ("restore", "start")
    t = c.tunables
    assert (t.buffer, t.min_headroom_bytes, t.stuck_after_s) == (0.25, 32 * MiB, 5.0)
    assert (t.host_reserve_bytes, t.host_budget_bytes) == (1 * GiB, 1200 * MiB)
    assert c.policy_for("web-1") == GuestPolicy(min_bytes=256 * MiB, shares=2000, buffer=0.5)
    assert c.policy_for("web-2") == GuestPolicy(min_bytes=256 * MiB, shares=2000)
    assert c.policy_for("other") == GuestPolicy(min_bytes=128 * MiB)
    assert c.policy_for("db").exclude
    assert c.source == str(path)


def test_precedence_runtime_exact_metadata_glob_defaults() -> None:
    c = parse_config(
        {
            "defaults": {"min": "130MiB", "shares": 1, "buffer": 0.1, "max": "9GiB"},
            "vm": {"a*": {"min": "200MiB", "shares": 2, "buffer": 0.2}, "ab": {"min": "300MiB"}},
        }
    )
    meta = GuestPolicy(min_bytes=400 * MiB, shares=4)
    p = c.policy_for("ab", meta, GuestPolicy(shares=5))
    assert p == GuestPolicy(min_bytes=300 * MiB, shares=5, buffer=0.2, max_bytes=9 * GiB)
    assert c.policy_for("ax", meta).min_bytes == 400 * MiB  # metadata beats a glob
    assert c.policy_for("ax", GuestPolicy(exclude=False)).exclude is False
    assert parse_config({"defaults": {"exclude": True}}).policy_for("z", GuestPolicy()).exclude  # sticky


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"interval": 0.1}, "interval"),
        ({"tunables": {"bufer": 1}}, "tunables.bufer"),
        ({"vm": {"a": {"min": 512}}}, "vm.a.min"),
        ({"vm": {"a": {"min": "512MiB", "max": "256MiB"}}}, "vm.a.min"),
        ({"host": {"reserve": "lots"}}, "host.reserve"),
        ({"on_exit": "explode"}, "on_exit"),
        ({"vm": {"a": {"shares": -1}}}, "vm.a.shares"),
        ({"tunables": {"stuck_after_s": -1}}, "tunables.stuck_after_s"),
        ({"unknown": 1}, "unknown"),
        ({"tunables": {"buffer": "20"}}, "tunables.buffer"),
        ({"tunables": {"default_shares": 1.5}}, "tunables.default_shares"),
        ({"tunables": {"reconnect_initial_s": 10, "reconnect_max_s": 1}}, "tunables.reconnect_max_s"),
    ],
)
def test_bad_values_are_refused_naming_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidValueError) as e:
        parse_config(raw)
    assert f"'{key}'" in str(e.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match="readable"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("interval = = 2")
    with pytest.raises(InvalidValueError, match="valid TOML"):
        load_config(bad)


def test_with_interval() -> None:
    assert DaemonConfig().with_interval(0.5).interval_s == 0.5
    with pytest.raises(InvalidValueError, match=r"from 0\.5"):
        DaemonConfig().with_interval(0.2)


def test_contrib_example_is_valid() -> None:
    c = load_config(EXAMPLE)
    assert c.interval_s >= 0.5


def test_manage_limits_the_daemon_to_matching_vms() -> None:
    c = parse_config({"manage": ["web-*", "db"]})
    assert not c.policy_for("web-1").exclude and not c.policy_for("db").exclude
    assert c.policy_for("mail").exclude
    assert c.policy_for("mail", GuestPolicy(exclude=False), GuestPolicy(min_bytes=GiB)).exclude
    assert not parse_config({}).policy_for("mail").exclude


# --- values that were accepted and then crashed the daemon, and inputs that gave a traceback -----------


@pytest.mark.parametrize(
    ("toml", "key", "accepted"),
    [
        ("[tunables]\njump_half_life_s = 0", "tunables.jump_half_life_s", "above 0 and at most"),
        ('[tunables]\ntarget_align = "0B"', "tunables.target_align", "a size from 1B to 1024TiB"),
        ("[tunables]\ndemand_decay_s = 0", "tunables.demand_decay_s", "a number of seconds above 0"),
        ("interval = 1e12", "interval", "a number of seconds from 0.5 to 31536000"),
        ("interval = nan", "interval", "a number of seconds from 0.5"),
        ("interval = inf", "interval", "a number of seconds from 0.5"),
        ("[tunables]\nbuffer = nan", "tunables.buffer", "a fraction from 0 to 1"),
        ("[tunables]\nmin_interval_s = 5", "tunables.interval_s", "at least min_interval_s"),
        ("[tunables]\njournal_ring_size = 0", "tunables.journal_ring_size", "a whole number from 1"),
        ("[health]\nsustain_s = inf", "health.sustain_s", "a number of seconds from 0"),
        ("[health]\nbaseline_tau_s = 0", "health.baseline_tau_s", "above 0"),
        ('[health]\nenabled = "yes"', "health.enabled", "boolean"),
        ("[guard]\nbaseline_tau_s = 0", "guard.baseline_tau_s", "above 0"),  # named as the file has it
        ("[defaults]\nshares = 0", "defaults.shares", "a whole number from 1 to 1000000"),
        ('[defaults]\nmin = "64MiB"', "defaults.min", "a size from 128MiB to"),
        ('[vm.a]\nbuffer = "nan%"', "vm.a.buffer", "percentage"),
        ('[host]\nbudget = "-1GiB"', "host.budget", "'-1GiB'"),
        ("[tunables]\njournal_ring_size = 1e400", "tunables.journal_ring_size", "a whole number"),
        ("tunables = 5", "tunables", "dictionary"),
    ],
)
def test_values_that_would_crash_the_loop_are_refused_at_load(
    tmp_path: Path, toml: str, key: str, accepted: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(InvalidValueError) as e:
        load_config(path)
    assert f"'{key}'" in str(e.value) and accepted in str(e.value), str(e.value)


def test_a_config_file_that_is_not_utf8_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"interval = 2\n# caf\xe9\n")
    with pytest.raises(InvalidValueError, match=r"UTF-8 text.*byte 18"):
        load_config(path)


def test_toml_nested_beyond_the_parser_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InvalidValueError, match="config file"):
        load_config(path)


def test_a_refused_value_is_quoted_short() -> None:
    with pytest.raises(InvalidValueError) as e:
        parse_config({"tunables": {"target_align": "9" * 5000 + "B"}})
    assert len(str(e.value)) < 400 and "5003 characters" in str(e.value)


def test_a_toml_number_too_long_for_python_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text("interval = " + "9" * 5000 + "\n")
    with pytest.raises(InvalidValueError, match="4300 digits"):
        load_config(path)


def test_the_health_table_under_its_old_name_is_read_and_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = 'sustain_s = 7\nwindows_min = "3GiB"\ndisable_balloon = true\n'
    new, old = tmp_path / "new.toml", tmp_path / "old.toml"
    new.write_text("[health]\n" + keys)
    old.write_text("[guard]\n" + keys)
    with caplog.at_level(logging.WARNING, logger="autoballoon.config"):
        current = load_config(new)
        assert caplog.records == []
        legacy = load_config(old)
    assert legacy.health == current.health and current.health.sustain_s == 7.0
    assert current.health.windows_min_bytes == 3 * GiB and current.health.disable_balloon
    [record] = caplog.records  # one warning for the table, not one per key
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert str(old) in message and "[guard]" in message and "is now called [health]" in message


def test_the_health_table_under_both_names_is_refused() -> None:
    with pytest.raises(InvalidValueError) as e:
        parse_config({"health": {"sustain_s": 5}, "guard": {"sustain_s": 9}})
    assert "'guard'" in str(e.value) and "only [health]" in str(e.value)


def test_the_shipped_config_names_the_health_table(caplog: pytest.LogCaptureFixture) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    tables = re.findall(r"^\[(\w+)\]", text, flags=re.MULTILINE)
    assert "health" in tables and "guard" not in tables
    with caplog.at_level(logging.WARNING, logger="autoballoon.config"):
        load_config(EXAMPLE)
    assert caplog.records == []
