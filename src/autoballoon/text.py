"""Text that a VM, its guest or a remote peer chose, made safe to show: names above all.

A VM named with terminal escape sequences must not be able to clear, recolour or retitle the terminal
of an operator who reads the CLI's tables, the daemon's log (``journalctl``, a ``tail -f``) or a
``curl /metrics``. Everything that prints such text to a person goes through :func:`printable`.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories that are not shown but act: C0/C1 controls (escape sequences, newlines, bells) and
#: format characters (bidirectional overrides, zero-width joiners, which reorder or hide text).
_HIDDEN = ("Cc", "Cf")


def printable(text: str) -> str:
    """``text`` with every control and format character written as an escape (``\\x1b``, ``\\u202e``),
    as Python's repr writes it, so that it is seen rather than obeyed; other characters are kept."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if unicodedata.category(c) in _HIDDEN:
            code = ord(c)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
        else:
            out.append(c)
    return "".join(out)
