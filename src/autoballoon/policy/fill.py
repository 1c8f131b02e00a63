"""How a pool of memory is shared among guests: the two pure functions the allocation phase is made of.

Both work on plain sequences of integer bytes and know nothing of guests, so they are tested on their own
(``tests/test_fill.py``) and any policy can use them.
"""

from __future__ import annotations

from collections.abc import Sequence


def water_fill(lo: Sequence[int], hi: Sequence[int], weights: Sequence[float], amount: int) -> list[int]:
    """Give each ``i`` ``lo[i]`` plus ``level * weights[i]`` of ``amount``, never above ``hi[i]``.

    One common level for everybody (a water-fill, as in Xen's squeezed): a guest whose cap is low takes
    all it can and the others share the rest by weight. A zero weight gets nothing above ``lo``. Returns
    integer allocations whose sum never exceeds ``sum(lo) + max(amount, 0)``.
    """
    n = len(lo)
    caps = [max(0, hi[i] - lo[i]) for i in range(n)]
    if amount <= 0:
        return list(lo)
    if amount >= sum(caps):
        return [lo[i] + caps[i] for i in range(n)]
    full_at = [caps[i] / weights[i] if weights[i] > 0 else 0.0 for i in range(n)]
    order = sorted((i for i in range(n) if weights[i] > 0), key=full_at.__getitem__)
    remaining = float(amount)
    weight_left = float(sum(weights[i] for i in order))
    level = 0.0
    for i in order:
        needed = full_at[i]
        if (needed - level) * weight_left <= remaining:
            remaining -= (needed - level) * weight_left
            weight_left -= weights[i]
            level = needed
        else:
            level += remaining / weight_left
            break
    return [lo[i] + min(caps[i], int(level * weights[i])) if weights[i] > 0 else lo[i] for i in range(n)]


def fit_tiers(tiers: Sequence[Sequence[int]], pool: int, weights: Sequence[float]) -> list[int] | None:
    """The highest tier that fits ``pool`` in full, topped up toward the next one by ``weights``.

    ``tiers`` go from the least each guest can live with up to the most it should get, every tier at
    least the one below it, guest by guest. The top-up is a water-fill by weight (the guests' shares)
    capped at the next tier: with equal weights every guest gets the same amount more, so the guests
    with the largest steps (the most surplus) are cut the most. Returns None when even the lowest tier
    does not fit.
    """
    above: Sequence[int] | None = None
    for tier in reversed(tiers):
        total = sum(tier)
        if total <= pool:
            if above is None:
                return list(tier)
            return water_fill(tier, above, weights, pool - total)
        above = tier
    return None
