"""The sim:// backend: every Backend method, its refusals, and the URI options."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoballoon.backends import open_backend
from autoballoon.backends.base import Backend
from autoballoon.backends.sim import SimBackend, parse_sim_uri
from autoballoon.errors import InvalidValueError, LimitError, RefusedError, UnknownVMError
from autoballoon.model import BalloonChange, GuestPolicy
from autoballoon.units import GiB, MiB


@pytest.fixture(scope="module")
def demo_names() -> list[str]:
    return open_backend("sim:///demo?warmup=0").snapshot().names


@pytest.fixture
def demo() -> SimBackend:
    backend = open_backend("sim:///demo?speed=max")
    assert isinstance(backend, SimBackend)
    return backend


def test_demo_is_a_backend_with_warmed_up_stats(demo: SimBackend) -> None:
    assert isinstance(demo, Backend)
    snap = demo.snapshot()
    assert snap.time == 60.0 == demo.clock.now() and demo.clock.wall() == snap.wall_time
    assert len(snap.guests) >= 4
    by_name = {g.name: g for g in snap.guests}
    assert not by_name["legacy"].stats.present  # the guest without a stats driver
    reporting = [g for g in snap.guests if g.name != "legacy"]
    assert all(g.stats.present for g in reporting)
    assert all(0 <= (g.stats_age(snap.wall_time) or 0) <= 10 for g in reporting)
    assert by_name["win10"].os_type == "windows" and by_name["db"].balloon.autodeflate
    assert snap.sum_max > snap.mem_total > snap.mem_available > 0
    assert demo.guest("web") == by_name["web"]


def test_sleeping_on_the_clock_advances_the_world(demo: SimBackend) -> None:
    demo.set_target("web", 2 * GiB)
    demo.clock.sleep(30)
    snap = demo.snapshot()
    assert snap.time == 90.0 == demo.sim.time
    assert snap.guest("web").actual_bytes == 2 * GiB  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("vm", "value", "error", "needle"),
    [
        ("web", 9 * GiB, LimitError, "above the VM's max memory 8GiB"),
        ("web", -1, LimitError, "negative"),
        ("nope", GiB, UnknownVMError, "known VMs: ci, db, legacy"),
        ("web", 1.5, InvalidValueError, "whole number"),
    ],
)
def test_set_target_refusals_change_nothing(
    demo: SimBackend, vm: str, value: int, error: type[Exception], needle: str
) -> None:
    before = demo.snapshot()
    with pytest.raises(error, match=needle):
        demo.set_target(vm, value)
    demo.clock.sleep(5)
    assert [g.target_bytes for g in demo.snapshot().guests] == [g.target_bytes for g in before.guests]
    assert demo.next_boot("web")["target_bytes"] == before.guest("web").target_bytes  # type: ignore[union-attr]


def test_set_target_config_only_waits_for_next_boot(demo: SimBackend) -> None:
    live = demo.guest("db").target_bytes
    demo.set_target("db", 3 * GiB, live=False, config=True)
    assert demo.guest("db").target_bytes == live
    assert demo.next_boot("db")["target_bytes"] == 3 * GiB
    with pytest.raises(LimitError, match="next boot"):
        demo.set_target("db", 13 * GiB, live=False, config=True)


def test_set_max_is_stored_for_next_boot(demo: SimBackend) -> None:
    result = demo.set_max("web", 10 * GiB)
    assert result.next_boot and not result.live and "next boot" in result.message
    assert demo.guest("web").max_bytes == 8 * GiB
    assert demo.next_boot("web")["max_bytes"] == 10 * GiB
    with pytest.raises(LimitError):
        demo.set_max("web", 0)
    with pytest.raises(UnknownVMError):
        demo.set_max("nope", GiB)


def test_set_vcpus_live_and_refusals(demo: SimBackend) -> None:
    result = demo.set_vcpus("web", 4)
    assert result.live and demo.guest("web").vcpus == 4
    with pytest.raises(LimitError, match="maximum 4"):
        demo.set_vcpus("web", 5)
    with pytest.raises(LimitError):
        demo.set_vcpus("web", 0)
    assert demo.guest("web").vcpus == 4
    result = demo.set_vcpus("web", 3, live=False, config=True)
    assert result.next_boot and not result.live and demo.guest("web").vcpus == 4
    cpu = demo.guest("web").cpu_time_ns or 0
    demo.clock.sleep(10)
    assert (demo.guest("web").cpu_time_ns or 0) > cpu


def test_balloon_model_none_is_the_next_boot_remedy(demo: SimBackend) -> None:
    result = demo.set_balloon("win10", BalloonChange(model="none"))
    assert result.next_boot and not result.live and "next boot" in result.message
    assert demo.guest("win10").balloon.model == "virtio"  # the running VM keeps its device
    assert demo.next_boot("win10")["balloon_model"] == "none"
    result = demo.set_balloon("web", BalloonChange(stats_period=2))
    assert result.live and demo.guest("web").balloon.stats_period == 2
    with pytest.raises(InvalidValueError, match="at least one"):
        demo.set_balloon("web", BalloonChange())
    with pytest.raises(InvalidValueError, match="virtio"):
        demo.set_balloon("web", BalloonChange(model="floppy"))
    with pytest.raises(InvalidValueError):
        demo.set_balloon("web", BalloonChange(stats_period=-1))


def test_policy_round_trips_and_is_validated(demo: SimBackend) -> None:
    assert demo.get_policy("web").min_bytes == GiB  # from the scenario, as libvirt metadata would hold
    policy = GuestPolicy(min_bytes=512 * MiB, max_bytes=6 * GiB, shares=10, buffer=0.3, exclude=True)
    demo.set_policy("web", policy)
    assert demo.get_policy("web") == policy == demo.guest("web").policy
    with pytest.raises(LimitError):
        demo.set_policy("web", GuestPolicy(min_bytes=9 * GiB))
    with pytest.raises(LimitError):
        demo.set_policy("web", GuestPolicy(min_bytes=2 * GiB, max_bytes=GiB))
    with pytest.raises(InvalidValueError, match="from 1"):  # a policy with 0 shares cannot be made at all
        demo.set_policy("web", GuestPolicy(shares=0))
    assert demo.get_policy("web") == policy


def test_a_stats_period_set_again_brings_stats_back(demo: SimBackend) -> None:
    demo.set_balloon("web", BalloonChange(stats_period=0))
    last = demo.guest("web").stats.last_update
    demo.clock.sleep(20)
    assert demo.guest("web").stats.last_update == last  # polling off: the report ages
    demo.set_balloon("web", BalloonChange(stats_period=1))
    demo.clock.sleep(2)
    fresh = demo.guest("web").stats.last_update
    assert fresh is not None and 0 <= demo.clock.wall() - fresh <= 1  # reporting every second again
    demo.set_balloon("legacy", BalloonChange(stats_period=1))
    demo.clock.sleep(5)
    assert not demo.guest("legacy").stats.present  # no driver in the guest: still nothing


def test_model_none_guest_refuses_live_target(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[host]\nram = "8G"\n[[guest]]\nname = "nodev"\nmax = "2G"\nballoon = "none"\n'
        'demand = { shape = "constant", level = "1G" }\n'
    )
    backend = open_backend(f"sim://{path}?warmup=0")
    with pytest.raises(RefusedError, match="no balloon device"):
        backend.set_target("nodev", GiB)
    assert backend.guest("nodev").target_bytes == 2 * GiB


def test_uri_options() -> None:
    assert parse_sim_uri("sim:///demo").scenario == "demo"
    assert parse_sim_uri("sim:///demo").speed == 1.0  # real time, like a real host
    assert parse_sim_uri("sim:///demo?speed=max").speed is None  # no real waiting at all
    opts = parse_sim_uri("sim:///demo?speed=100&warmup=5&seed=3")
    assert (opts.speed, opts.warmup, opts.seed) == (100.0, 5.0, 3)
    assert parse_sim_uri("sim:///srv/scen.toml").scenario == "/srv/scen.toml"
    backend = open_backend("sim:///demo?speed=50&warmup=0")
    assert isinstance(backend, SimBackend) and backend.clock.speed == 50.0 and backend.snapshot().time == 0.0


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("sim:///nope", "built-in scenario 'nope'"),
        ("sim:///no/such/file.toml", "scenario file '/no/such/file.toml'"),
        ("sim:///demo?speed=0", "speed"),
        ("sim:///demo?speed=fast", "speed"),
        ("sim:///demo?speed=1e-300", "speed.*from 0.01"),  # overflowed the clock's sleep
        ("sim:///demo?speed=nan", "speed"),
        ("sim:///demo?speed=inf", "'max' for no real waiting"),
        ("sim:///demo?warmup=-1", "warmup"),
        ("sim:///demo?warmup=1e9", "warmup.*86400"),  # simulated for hours before refusing nothing
        ("sim:///demo?warmup=nan", "warmup"),
        ("sim:///demo?seed=99999999999999999999", "seed"),
        ("sim:///demo?seed=x", "seed"),
        ("sim:///demo?colour=red", "one of speed, warmup, seed"),
        ("sim://", "sim:///demo"),
    ],
)
def test_bad_uris_are_clear_errors(uri: str, needle: str) -> None:
    with pytest.raises(InvalidValueError, match=needle):
        open_backend(uri)


def test_bad_scenario_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[host]\nram = "8G"\n[[guest]]\nname = "a"\nmax = "lots"\n')
    with pytest.raises(InvalidValueError, match=r"bad\.toml.*'a'.*'max'"):
        open_backend(f"sim://{path}")


def test_each_open_is_a_fresh_world(demo_names: list[str]) -> None:
    first = open_backend("sim:///demo?warmup=0")
    first.set_target("web", GiB)
    second = open_backend("sim:///demo?warmup=0")
    assert second.guest("web").target_bytes != GiB and second.snapshot().names == demo_names


def test_the_default_clock_sleeps_in_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ?speed a daemon on sim:///demo must sleep like on a real host: it used to return at once,
    so ``autoballoon run`` spun a core and wrote hundreds of journal lines a second."""
    slept: list[float] = []
    monkeypatch.setattr("autoballoon.clock.time.sleep", slept.append)
    backend = open_backend("sim:///demo?warmup=0")
    assert isinstance(backend, SimBackend)
    backend.clock.sleep(2.0)
    assert slept == [2.0] and backend.sim.time == 2.0
    fast = open_backend("sim:///demo?warmup=0&speed=max")
    assert isinstance(fast, SimBackend)
    fast.clock.sleep(2.0)
    assert slept == [2.0] and fast.sim.time == 2.0  # no real wait
