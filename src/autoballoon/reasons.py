"""Why a target moved, or sits, where it does: the figures a decision came from and the rule that bound.

A journal line "grow 1.5→1.72 GiB, reason demand" for a guest using 658 MiB with 878 MiB available
explained nothing: the operator cannot tell a cushion from a leak, or a cut by a short host from a want
granted in full. Every face that shows a decision (the journal, the daemon's log, ``info VM``, the API and
the dashboard) takes its figures and its rule from here, so they say the same thing.

Pure functions of a :class:`~autoballoon.model.GuestDecision`; no figure here is a guess (``None`` stays
unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoballoon.model import GuestDecision
from autoballoon.units import GiB, MiB, human

#: The rules that can bind a target, and what each means (docs/api.md lists them too).
RULES = {
    "want": "its want, granted in full: the budget holds every guest's want",
    "max": "its ceiling (the VM's max or its policy max)",
    "floor": "its floor (the policy min, or the daemon's least)",
    "share-above-need": "its budget share: the host is short, the cushions are cut, its need is met",
    "share-below-need": "its budget share: the host is short, it is below its need, above its OOM floor",
    "out-of-memory": "the host is out of memory: shared up to the OOM floors",
    "shrink-step": "the shrink rate: it moves one step a stats report toward its goal",
    "paced-growth": "growth paced by memory that is not free yet (other balloons still shrinking)",
    "held": "held above its goal (a dead band, a cooldown after a grow, pressure or a guard)",
    "least-step": "within the least step of its goal: not worth a balloon move",
    # A VM the policy does not manage moves only by one of these (its action's reason):
    "quarantine": "deflated to its ceiling: quarantined by the health guard",
    "stuck": "follows a balloon that did not move toward its target",
    "autodeflate": "follows a balloon the guest deflated by itself",
    "no-stats": "follows the balloon of a guest without fresh stats (never shrunk)",
    "retry": "a grow that had not arrived, sent again",
}


def binding_rule(d: GuestDecision, old: int, new: int) -> str | None:
    """The rule that set ``new`` (the target after this decision; ``old`` before it), a key of
    :data:`RULES`; None when the decision sized no goal (a VM it does not manage)."""
    goal, want = d.goal, d.want
    if goal is None or want is None:
        return None
    if d.ceiling is not None and new >= d.ceiling:
        return "max"
    if d.floor is not None and new <= d.floor and goal <= d.floor:
        return "floor"
    if new < old and new > goal:
        return "shrink-step"
    if new > old and new < goal:
        return "paced-growth"
    if new == old and goal != old:
        return "held" if goal < old else "least-step"
    if goal >= want:
        return "want"
    if d.need is not None and goal >= d.need:
        return "share-above-need"
    if d.oom_floor is not None and goal >= d.oom_floor:
        return "share-below-need"
    return "out-of-memory"


def figures(d: GuestDecision | None, old: int, new: int, reason: str | None = None) -> dict[str, Any]:
    """The figures behind one decision about one VM, JSON-ready (bytes; ``None`` unknown): what the
    journal adds to an action line and ``info --json`` and the API show. A VM the policy does not
    manage has no goal; its move's ``reason`` is then its rule when it is one of :data:`RULES`."""
    judged = d if d is not None else GuestDecision()
    rule = binding_rule(judged, old, new)
    if rule is None and reason in RULES:
        rule = reason
    return {
        "used": judged.used,
        "demand": judged.demand,
        "oom_floor": judged.oom_floor,
        "need": judged.need,
        "want": judged.want,
        "floor": judged.floor,
        "ceiling": judged.ceiling,
        "goal": judged.goal,
        "rule": rule,
    }


def size_text(n: int | None) -> str:
    """A size as a log line shows it: GiB to the hundredth (1.72 GiB), MiB whole (658 MiB)."""
    if n is None or abs(n) < MiB:
        return human(n)
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.0f} MiB"


def _size(label: str, n: Any) -> str | None:
    return f"{label} {size_text(n)}" if isinstance(n, int) and not isinstance(n, bool) else None


def explain(fig: Mapping[str, Any]) -> str:
    """The figures and the rule as words: ``used 658 MiB, demand 700 MiB, need 820 MiB, want 1.72 GiB,
    OOM floor 750 MiB, floor 128 MiB; rule: want``."""
    parts = [
        _size("used", fig.get("used")),
        _size("demand", fig.get("demand")),
        _size("need", fig.get("need")),
        _size("want", fig.get("want")),
        _size("OOM floor", fig.get("oom_floor")),
        _size("floor", fig.get("floor")),
    ]
    text = ", ".join(p for p in parts if p is not None)
    rule = fig.get("rule")
    return text + (f"; rule: {rule}" if rule else "")


def action_text(entry: Mapping[str, Any]) -> str:
    """A journal action entry as one line for the daemon's log: the VM, the move, the reason, the
    figures, the rule and the budget."""
    direction = entry.get("direction")
    verb = direction if direction in ("grow", "shrink") else "resend"
    old, new = entry.get("old_target"), entry.get("new_target")
    head = f"{entry.get('vm')}: {verb} {size_text(old)} -> {size_text(new)} ({entry.get('reason')})"
    if not entry.get("applied", True):
        error = entry.get("error")
        head += f" FAILED: {error}" if error is not None else " (dry run: not applied)"
    tail = [
        _size("guest available", entry.get("available")),
        _size("budget", entry.get("budget")),
        _size("host available", entry.get("host_available")),
    ]
    parts = (head, explain(entry), ", ".join(t for t in tail if t is not None))
    return "; ".join(x for x in parts if x)
