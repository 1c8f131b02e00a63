"""Sections of a generated report that another command owns: found and replaced between two markers.

``docs/evaluation-real.md`` holds the busybox workloads (``make realbench``) and the production-like
guests (``make prodbench``); each command rewrites its own part and keeps the other's as it was.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Section:
    begin: str
    end: str

    def find(self, text: str) -> str | None:
        """The section in ``text``, markers included, or None."""
        start = text.find(self.begin)
        end = text.find(self.end, start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            return None
        return text[start : end + len(self.end)] + "\n"

    def splice(self, text: str, section: str) -> str:
        """``text`` with this section replaced by ``section`` (appended when it has none)."""
        old = self.find(text)
        if old is None:
            return text.rstrip("\n") + "\n\n" + section
        return text.replace(old, section)


PRODUCTION = Section(
    "<!-- production-like guests: begin (make prodbench rewrites this section) -->",
    "<!-- production-like guests: end -->",
)
