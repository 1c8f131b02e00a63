"""Placeholder replaced by the CLI package."""


def main() -> None:
    raise SystemExit(0)
