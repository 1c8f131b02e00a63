"""``autoballoon completion SHELL``: the shell completion script click makes for this command line."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from autoballoon.cli import cli

SHELLS = ("bash", "zsh", "fish")
#: The variable click's completion reads (``_<PROG>_COMPLETE``).
COMPLETE_VAR = "_AUTOBALLOON_COMPLETE"


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL: commands, options and choices complete with Tab.

    bash: eval "$(autoballoon completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc;
    fish: autoballoon completion fish > ~/.config/fish/completions/autoballoon.fish
    """
    kind = get_completion_class(shell)
    if kind is None:  # click knows every shell in SHELLS; a click without one is refused, not a crash
        raise click.UsageError(f"this click has no completion for {shell}")
    click.echo(kind(cli, {}, "autoballoon", COMPLETE_VAR).source())
