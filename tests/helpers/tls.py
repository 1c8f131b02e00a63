"""A throwaway certificate for the tests that serve HTTPS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from autoballoon.server import Tls
from tests import needs


def make_cert(folder: Path) -> Tls:
    """A self-signed certificate for 127.0.0.1 and its key in ``folder`` (openssl makes them)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        needs.missing("openssl is needed to make a test certificate")
    tls = Tls(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tls.key), "-out", str(tls.cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return tls
