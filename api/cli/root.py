"""The `sleipnir` group: its options, its help, and each command imported when it runs (`COMMANDS`)."""

from __future__ import annotations

import importlib

import click

from . import COMMANDS, interrupted


class LazyGroup(click.Group):
    """A group whose commands are imported when they are invoked (or their own help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = COMMANDS.get(name)
        if found is None:
            return None
        module = importlib.import_module(f"{__package__}.{found.module}")
        command = getattr(module, found.attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # while the command's module loads: click would say "Aborted!" and exit 1
            interrupted()

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.summary) for name, command in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sleipnir", prog_name="sleipnir")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour every command's output: always, never, or auto (a terminal; FORCE_COLOR and NO_COLOR decide otherwise).",
)
def main(debug: bool, color: str) -> None:
    """Sleipnir: jobs of LLM prompts, described as code, compiled and run.

    Shell completion (commands, options, job names): `eval "$(_SLEIPNIR_COMPLETE=bash_source sleipnir)"` in
    ~/.bashrc (zsh_source, fish_source for the others); see spec/cli.md.
    """
    del debug, color
