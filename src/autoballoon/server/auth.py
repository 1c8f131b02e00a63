"""The API token: read once from a file, compared in constant time.

Reading is the only place a token exists in memory as text; it is never logged or echoed. A request's
``Authorization: Bearer`` value is compared with :func:`hmac.compare_digest`, so the time an answer takes
says nothing about how much of a guessed token was right.
"""

from __future__ import annotations

import hmac
import logging
import stat
from pathlib import Path

from autoballoon.errors import InvalidValueError

log = logging.getLogger("autoballoon.server")

#: Shorter tokens are refused: a token is the only thing between the network and every VM's memory.
MIN_TOKEN_CHARS = 16
SCHEME = "bearer"
TOKEN_EXAMPLE = "for example from `openssl rand -hex 32`"


def load_token(path: str | Path) -> bytes:
    """The token in ``path`` (a leading byte-order mark and surrounding whitespace ignored); refused if
    missing, empty, too short, or not printable ASCII.

    Notepad and PowerShell start a UTF-8 file with a byte-order mark: kept, it made the token one that
    no client sends, and every change was a 401 with nothing said at start. A character outside ASCII
    cannot be sent in an HTTP header by every client (curl sends UTF-8, others Latin-1 or nothing), so
    such a token is refused at start, where the operator sees why, rather than failing only for some.
    A file other users may read is accepted (refusing would stop a daemon at boot over a mode bit) but
    warned about, naming the remedy: anyone who can read it can change every VM's memory.
    """
    try:
        mode = Path(path).stat().st_mode
        text = Path(path).read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidValueError("API token file", str(path), f"a readable UTF-8 text file ({e})") from None
    if len(text) < MIN_TOKEN_CHARS or any(c.isspace() for c in text):
        raise InvalidValueError(
            "API token file",
            str(path),
            f"one token of at least {MIN_TOKEN_CHARS} characters without spaces ({TOKEN_EXAMPLE})",
        )
    if not (text.isascii() and text.isprintable()):  # the message never shows the token, nor part of it
        raise InvalidValueError(
            "API token file",
            str(path),
            "a token of ASCII letters, digits and punctuation only, which every HTTP client can send; this "
            f"one has other characters ({TOKEN_EXAMPLE})",
        )
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning(
            "API token file %s can be read or written by every user (mode %s): run `chmod 600 %s`",
            path,
            stat.filemode(mode),
            path,
        )
    return text.encode("utf-8")


def bearer_matches(header: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a Bearer credential."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != SCHEME:
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token)
