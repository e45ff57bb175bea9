"""The command line: parses arguments, calls the store, hands results to render.

This package is thin on purpose: one module per command group, and one place (main) that
turns errors into a single stderr line and a documented exit code.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from blobctl import __version__
from blobctl.errors import EXIT_INTERRUPTED, EXIT_USAGE, BlobctlError

app = typer.Typer(
    name="blobctl",
    help="A content-addressed store: put files in by SHA-256, get them back, name them, "
         "mount remotes, push, and keep the cache in bounds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"blobctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    store: Annotated[Optional[str], typer.Option(
        "--store", "-s", metavar="DIR", envvar="BLOBCTL_STORE", show_envvar=True,
        help="Store directory (default: the user data dir, or 'store' in the user config).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages or progress on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if quiet:
        os.environ["BLOBCTL_QUIET"] = "1"
    ctx.obj = store


def _register_commands() -> None:
    from blobctl.cli import cache_cmds, config_cmds, store_cmds  # noqa: F401 - registers commands


def main() -> None:
    """Entry point: run the app, mapping every failure to one line and an exit code."""
    from blobctl import render

    _register_commands()
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="blobctl", standalone_mode=False)
    except BlobctlError as exc:
        render.error_line(str(exc))
        code = exc.exit_code
    except typer.Abort as exc:
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        render.error_line("interrupted" if interrupted else "aborted")
        code = EXIT_INTERRUPTED if interrupted else 1
    except KeyboardInterrupt:
        render.error_line("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): quietly stop, like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except typer.TyperException as exc:  # usage errors from argument parsing
        exc.show()
        code = getattr(exc, "exit_code", EXIT_USAGE)
    sys.exit(code or 0)
