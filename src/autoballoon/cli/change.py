"""Commands that change a VM: ``setmem``, ``setmaxmem``, ``setvcpus``, ``balloon``, ``policy``.

All validation lives in :mod:`autoballoon.ops`; a refused request exits 2 and changes nothing.
"""

from __future__ import annotations

import click

from autoballoon import ops
from autoballoon.cli import Context, cli, pass_ctx
from autoballoon.cli.inventory import policy_text
from autoballoon.cli.output import emit_json, json_option, say
from autoballoon.cli.params import BUFFER_TYPE, COUNT_TYPE, ON_OFF, SHARES_TYPE, SIZE, STATS_PERIOD_TYPE
from autoballoon.model import BALLOON_MODELS, BalloonChange, ChangeResult
from autoballoon.units import format_size, human
from autoballoon.views import guest_detail

#: Let "-1G" reach the SIZE parser (which names it and says what is accepted) instead of click's
#: "no such option '-1'".
_NUMERIC_ARGS = {"ignore_unknown_options": True}

_SCOPE_HELP = "Neither --live nor --config means the running VM if it runs, else its persistent config."


def _report(result: ChangeResult, vm: str, as_json: bool = False) -> None:
    if as_json:
        emit_json({"vm": vm, "live": result.live, "next_boot": result.next_boot, "message": result.message})
        return
    say(result.message)
    if result.next_boot and not result.live:
        say("note: this takes effect at the next boot of the VM (a restart, not a reboot inside it)")


@cli.command(context_settings=_NUMERIC_ARGS)
@click.argument("vm")
@click.argument("size", type=SIZE)
@click.option("--live", is_flag=True, help="Change the running VM's balloon target.")
@click.option("--config", is_flag=True, help="Change <currentMemory> in the persistent config.")
@click.option("--force", is_flag=True, help="Set a live target below what the guest uses now.")
@json_option
@pass_ctx
def setmem(ctx: Context, vm: str, size: int, live: bool, config: bool, force: bool, as_json: bool) -> None:
    """Set the balloon target of VM to SIZE (bare number = KiB, as virsh; 512M, 2G...).

    Refused (exit 2, nothing changed) outside the bounds the daemon keeps its own targets in: above the
    VM's <memory> or its policy maximum, below 128 MiB, its policy minimum or a virtio-mem guest's boot
    memory; and, for the running VM, below what its guest uses now unless --force is given.
    """
    guest = ctx.backend.guest(vm)
    used = guest.used_bytes
    scope = ops.setmem(ctx.backend, vm, size, live=live, config=config, force=force)
    if as_json:
        emit_json({"vm": vm, "target_bytes": size, "scope": scope})
    else:
        say(f"{vm}: balloon target set to {format_size(size)} ({scope})")
    if force and used is not None and size < used and scope != "config":
        say(f"autoballoon: warning: {vm} uses {human(used)}: expect it to swap or OOM-kill", err=True)


setmem.help = (setmem.help or "") + "\n\n" + _SCOPE_HELP


@cli.command(context_settings=_NUMERIC_ARGS)
@click.argument("vm")
@click.argument("size", type=SIZE)
@click.option(
    "--config", is_flag=True, required=True, help="Required: <memory> can change only in the config."
)
@json_option
@pass_ctx
def setmaxmem(ctx: Context, vm: str, size: int, config: bool, as_json: bool) -> None:
    """Set the VM's maximum memory (<memory>) in its persistent config; it applies at the next boot."""
    _report(ops.setmaxmem(ctx.backend, vm, size), vm, as_json)


@cli.command(context_settings=_NUMERIC_ARGS)
@click.argument("vm")
@click.argument("count", type=COUNT_TYPE)
@click.option("--live", is_flag=True, help="Change the running VM.")
@click.option("--config", is_flag=True, help="Change the persistent config.")
@json_option
@pass_ctx
def setvcpus(ctx: Context, vm: str, count: int, live: bool, config: bool, as_json: bool) -> None:
    """Set the number of active vCPUs (at most the VM's maximum)."""
    _report(ops.setvcpus(ctx.backend, vm, count, live=live, config=config), vm, as_json)


setvcpus.help = (setvcpus.help or "") + "\n\n" + _SCOPE_HELP


@cli.command()
@click.argument("vm")
@click.option(
    "--model",
    type=click.Choice(list(BALLOON_MODELS)),
    help="'none' removes the balloon device (the remedy for guests the balloon hurts).",
)
@click.option(
    "--autodeflate", type=ON_OFF, help="Let the guest take memory back at OOM time (deflate-on-oom)."
)
@click.option("--free-page-reporting", type=ON_OFF, help="Let the guest report free pages to the host.")
@click.option(
    "--stats-period",
    type=STATS_PERIOD_TYPE,
    help="Seconds between guest memory stats; 0 turns them off. Also applied live.",
)
@json_option
@pass_ctx
def balloon(
    ctx: Context,
    vm: str,
    model: str | None,
    autodeflate: str | None,
    free_page_reporting: str | None,
    stats_period: int | None,
    as_json: bool,
) -> None:
    """Show or change the VM's persistent <memballoon> settings.

    Model, autodeflate and free-page reporting take effect at the next boot; the stats period also applies
    to the running VM. Without options, prints the current settings.
    """
    change = BalloonChange(
        model=model,
        autodeflate=None if autodeflate is None else autodeflate == "on",
        free_page_reporting=None if free_page_reporting is None else free_page_reporting == "on",
        stats_period=stats_period,
    )
    if change.empty:
        g = ctx.backend.guest(vm)
        b = g.balloon
        if as_json:
            emit_json({"vm": g.name, **guest_detail(g, 0.0)["balloon"]})
            return
        say(
            f"{vm}: model {b.model}, autodeflate {'on' if b.autodeflate else 'off'}, "
            f"free-page-reporting {'on' if b.free_page_reporting else 'off'}, "
            f"stats period {b.stats_period or 0} s"
        )
        return
    _report(ops.set_balloon(ctx.backend, vm, change), vm, as_json)


@cli.command()
@click.argument("vm")
@click.option("--min", "min_", type=SIZE, help="Floor: never balloon below this.")
@click.option("--max", "max_", type=SIZE, help="Never give the VM more than this (at most its <memory>).")
@click.option(
    "--shares",
    type=SHARES_TYPE,
    help="Weight when the host is short (default 1000).",
)
@click.option(
    "--buffer",
    type=BUFFER_TYPE,
    help="Headroom kept above demand: a fraction (0.2) or a percentage (20%), the same forms as the "
    "config file and the API take (default 20%).",
)
@click.option("--exclude/--include", default=None, help="Leave this VM alone / manage it again.")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting policy as JSON.")
@pass_ctx
def policy(
    ctx: Context,
    vm: str,
    min_: int | None,
    max_: int | None,
    shares: int | None,
    buffer: float | None,
    exclude: bool | None,
    as_json: bool,
) -> None:
    """Show or change the VM's autoballoon policy, stored with the VM (libvirt <metadata>)."""
    changes: ops.PolicyChanges = {}
    if min_ is not None:
        changes["min_bytes"] = min_
    if max_ is not None:
        changes["max_bytes"] = max_
    if shares is not None:
        changes["shares"] = shares
    if buffer is not None:
        changes["buffer"] = buffer
    if exclude is not None:
        changes["exclude"] = exclude
    current = ops.update_policy(ctx.backend, vm, **changes) if changes else ctx.backend.get_policy(vm)
    if as_json:
        emit_json(current.to_json())
    else:
        say(f"{vm}: {policy_text(current)}")
