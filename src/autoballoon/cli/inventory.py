"""Read-only commands: ``list``, ``info``, ``host``."""

from __future__ import annotations

import urllib.parse
from typing import Any

import click

from autoballoon.cli import Context, cli, pass_ctx
from autoballoon.cli.output import emit_json, pairs, say, table
from autoballoon.cli.remote import (
    DaemonGarbled,
    DaemonRefused,
    DaemonUnreachable,
    daemon_option,
    request,
    statuses,
)
from autoballoon.model import GuestPolicy, GuestSnapshot
from autoballoon.reasons import RULES, explain
from autoballoon.units import human
from autoballoon.views import JUDGED_KEYS, guest_detail, guest_row, host_view, snapshot_status


def _age(age: float | None) -> str:
    return "-" if age is None else f"{age:.0f}s"


def policy_text(p: GuestPolicy) -> str:
    if p.exclude:
        return "excluded"
    parts = []
    if p.min_bytes is not None:
        parts.append(f"min {human(p.min_bytes)}")
    if p.max_bytes is not None:
        parts.append(f"max {human(p.max_bytes)}")
    if p.shares is not None:
        parts.append(f"shares {p.shares}")
    if p.buffer is not None:
        parts.append(f"buffer {p.buffer * 100:g}%")
    return ", ".join(parts) or "default"


#: ``list``'s columns at 80 columns: what an operator scans for; ``--wide`` adds the rest.
NARROW_COLUMNS = ("NAME", "MAX", "TARGET", "ACTUAL", "USED", "AVAIL", "STATUS")
WIDE_COLUMNS = (
    "NAME", "STATE", "MAX", "TARGET", "ACTUAL", "RSS", "USED", "AVAIL", "STATS", "BALLOON", "VCPU", "POLICY",
    "STATUS",
)  # fmt: skip
#: Columns of numbers, right-aligned.
_NUMERIC = frozenset({"MAX", "TARGET", "ACTUAL", "RSS", "USED", "AVAIL", "STATS", "VCPU"})


def _list_cells(g: GuestSnapshot, wall: float, status: str) -> dict[str, str]:
    """Every column of ``list`` for one VM; a VM that is not running shows its state as its status in
    the narrow table (which has no STATE column)."""
    return {
        "NAME": g.name,
        "STATE": g.state.value,
        "MAX": human(g.max_bytes),
        "TARGET": human(g.target_bytes),
        "ACTUAL": human(g.actual_bytes),
        "RSS": human(g.host_rss_bytes),
        "USED": human(g.used_bytes),
        "AVAIL": human(g.stats.available),
        "STATS": _age(g.stats_age(wall)),
        "BALLOON": g.balloon.model + (" +autodeflate" if g.balloon.autodeflate else ""),
        "VCPU": str(g.vcpus),
        "POLICY": policy_text(g.policy),
        "STATUS": status,
    }


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list; sizes in bytes, stable field names.")
@click.option(
    "--wide", is_flag=True, help="Every column: state, QEMU RSS, stats age, balloon, vCPUs, policy too."
)
@daemon_option
@pass_ctx
def list_(ctx: Context, as_json: bool, wide: bool, daemon_url: str) -> None:
    """Every VM: memory (max, target, actual, guest used/available) and what autoballoon does with it
    (STATUS: from the running daemon when one manages this host). It fits 80 columns; --wide shows state,
    QEMU RSS, stats age, balloon, vCPUs and policy as well."""
    snap = ctx.backend.snapshot()
    known = statuses(daemon_url, ctx.uri) or {}
    judged = {g.name: known.get(g.name) or snapshot_status(g, snap.wall_time) for g in snap.guests}
    rows = [guest_row(g, snap.wall_time, judged[g.name]) for g in snap.guests]
    if as_json:
        emit_json(rows)
        return
    columns = WIDE_COLUMNS if wide else NARROW_COLUMNS
    cells = []
    for g in snap.guests:
        status = judged[g.name][0]
        if not wide and g.state.value != "running":
            status = g.state.value
        row = _list_cells(g, snap.wall_time, status)
        cells.append([row[c] for c in columns])
    right = {i for i, c in enumerate(columns) if c in _NUMERIC}
    table(None, list(columns), cells, right=right, compact=not wide)
    # Reasons are sentences: below the table they stay readable instead of squeezing every column.
    for g in snap.guests:
        status, reason = judged[g.name]
        if reason and status != "managed":
            say(f"{g.name}: {status_text(status, reason)}")


def _virtio_mem_text(g: GuestSnapshot) -> str:
    v = g.virtio_mem
    if v is None:
        return ""
    return (
        f" ({human(v.plugged_bytes)} plugged of {human(v.region_bytes)} "
        f"on {human(v.boot_bytes)} boot memory, requested {human(v.requested_bytes)}, "
        f"blocks of {human(v.block_bytes)})"
    )


def status_text(status: str, reason: str) -> str:
    return f"{status}: {reason}" if reason else status


def daemon_judgement(url: str, uri: str, vm: str) -> dict[str, Any] | None:
    """What the running daemon managing ``uri`` last judged ``vm`` by (:data:`JUDGED_KEYS`: its used,
    demand, OOM floor, need, want, goal, the rule that bound it, its harm), or None when no daemon
    manages it or its answer is not such an object."""
    try:
        host = request(url, "host")
        if not isinstance(host, dict) or host.get("uri") != uri:
            return None
        row = request(url, "vms/" + urllib.parse.quote(vm, safe=""))
    except (DaemonUnreachable, DaemonRefused, DaemonGarbled):
        return None
    if not isinstance(row, dict):
        return None
    judged = {k: row.get(k) for k in JUDGED_KEYS}
    sizes_ok = all(isinstance(v, int | None) and not isinstance(v, bool) for k, v in judged.items()
                   if k.endswith("_bytes"))  # fmt: skip
    return judged if sizes_ok and isinstance(judged["rule"], str | None) else None


def _judgement_pairs(judged: dict[str, Any]) -> list[tuple[str, str]]:
    fig = {k.removesuffix("_bytes").removeprefix("decided_"): v for k, v in judged.items()}
    rule = judged.get("rule")
    return [
        ("Decision (daemon)", explain(fig) or "-"),
        ("Bound by", f"{rule}: {RULES.get(rule, '')}" if rule else "-"),
        ("Harm", judged.get("harm") or "none"),
    ]


@cli.command()
@click.argument("vm")
@click.option("--json", "as_json", is_flag=True, help="One JSON object; sizes in bytes.")
@daemon_option
@pass_ctx
def info(ctx: Context, vm: str, as_json: bool, daemon_url: str) -> None:
    """Everything known about one VM: what virsh dominfo and dommemstat show, with units."""
    snap = ctx.backend.snapshot()
    g = snap.guest(vm) or ctx.backend.guest(vm)  # the second call raises UnknownVMError with the known names
    detail = guest_detail(g, snap.wall_time)
    known = (statuses(daemon_url, ctx.uri) or {}).get(g.name)
    if known is not None:
        detail["status"], detail["status_reason"] = known
    judged = daemon_judgement(daemon_url, ctx.uri, g.name) if known is not None else None
    if judged is not None:
        detail.update(judged)
    if as_json:
        emit_json(detail)
        return
    s, b = g.stats, g.balloon
    pairs(
        f"VM {g.name}",
        [
            ("State", g.state.value + ("" if g.persistent else " (transient)")),
            ("UUID", g.uuid or "-"),
            ("OS type", g.os_type),
            ("vCPUs", f"{g.vcpus} of {g.max_vcpus}"),
            ("CPU time", "-" if g.cpu_time_ns is None else f"{g.cpu_time_ns / 1e9:.1f} s"),
            ("Max memory", human(g.max_bytes)),
            ("Balloon target", human(g.target_bytes)),
            ("Balloon actual", human(g.actual_bytes)),
            ("Balloon size", human(detail["balloon_size_bytes"])),
            ("QEMU RSS (host)", human(g.host_rss_bytes)),
            ("Reclaim mechanism", g.mechanism + _virtio_mem_text(g)),
            (
                "Balloon device",
                f"{b.model}, autodeflate {'on' if b.autodeflate else 'off'}, "
                f"free-page-reporting {'on' if b.free_page_reporting else 'off'}, "
                f"stats period {b.stats_period or 'off'}{'' if not b.stats_period else ' s'}",
            ),
            ("Guest MemTotal", human(s.total)),
            ("Guest MemAvailable", human(s.available)),
            ("Guest MemFree", human(s.free)),
            ("Guest disk caches", human(s.caches)),
            ("Guest used", human(g.used_bytes)),
            ("Swap in / out", f"{human(s.swap_in)} / {human(s.swap_out)}"),
            (
                "Major / minor faults",
                f"{s.major_faults if s.major_faults is not None else '-'} / "
                f"{s.minor_faults if s.minor_faults is not None else '-'}",
            ),
            ("Stats age", _age(detail["stats_age_s"])),
            ("Policy", policy_text(g.policy)),
            ("Status", status_text(detail["status"], detail["status_reason"])),
            *(_judgement_pairs(judged) if judged is not None else []),
        ],
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object; sizes in bytes.")
@pass_ctx
def host(ctx: Context, as_json: bool) -> None:
    """Host memory, MemAvailable, PSI, swap, KSM, and what the VMs hold (max, target, actual, over-commit)."""
    snap = ctx.backend.snapshot()
    view = host_view(snap)
    if as_json:
        emit_json(view)
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}%"

    swap = "-" if snap.swap_total is None else f"{human(snap.swap_free)} free of {human(snap.swap_total)}"
    ksm = (
        "-"
        if snap.ksm_running is None
        else (f"{'running' if snap.ksm_running else 'stopped'}, saving {human(snap.ksm_saved_bytes)}")
    )
    pairs(
        f"Host {snap.hostname or ctx.uri}",
        [
            ("Memory", human(snap.mem_total)),
            ("MemAvailable", human(snap.mem_available)),
            (
                "Memory pressure (PSI avg10)",
                f"some {pct(snap.psi_some_avg10)}, full {pct(snap.psi_full_avg10)}",
            ),
            ("Swap", swap),
            ("KSM", ksm),
            (
                "Load (1 min)",
                "-" if snap.load_avg1 is None else f"{snap.load_avg1:.2f} on {snap.cpu_count} CPUs",
            ),
            ("VMs", f"{view['vms_running']} running of {view['vms_total']}"),
            ("Sum of VM max", human(snap.sum_max)),
            ("Sum of VM targets", human(snap.sum_target)),
            ("Sum of VM actual", human(snap.sum_actual)),
            ("Sum of QEMU RSS", human(view["sum_host_rss_bytes"])),
            ("Over-commit (max / RAM)", f"{snap.overcommit_ratio:.2f}"),
        ],
    )
