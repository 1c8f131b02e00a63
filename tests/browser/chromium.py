"""Where the browser tests find Chromium, and what they do when it is missing."""

from __future__ import annotations

from pathlib import Path

from tests import needs

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def need_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if not missing:
        return
    message = (
        "headless Chromium test needs " + ", ".join(missing) + " (apt-get install chromium chromium-driver)"
    )
    needs.missing(message)
