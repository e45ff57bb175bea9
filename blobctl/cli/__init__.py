"""The command line: parses arguments, calls the store, hands results to render.

This package is thin on purpose: one module per command group, and one place (main) that
turns errors into a single stderr line and a documented exit code.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from blobctl import __version__
from blobctl.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, BlobctlError, UsageError, from_os_error

#: Each command and the module defining it, in the order `blobctl --help` lists them.
COMMAND_MODULES = {
    **dict.fromkeys(["put", "get", "ls", "rm", "stat"], "blobctl.cli.store_cmds"),
    **dict.fromkeys(["mount", "umount", "push", "pull"], "blobctl.cli.remote_cmds"),
    **dict.fromkeys(["gc", "pin", "unpin", "fsck"], "blobctl.cli.cache_cmds"),
    "config": "blobctl.cli.config_cmds",
}


class LazyCommands(typer.core.TyperGroup):
    """The top-level group, importing a command's module only when that command is looked
    up: a run imports and builds one command module instead of all of them (start-up is a
    benchmark target). Listing (help, completion, docs) and an unknown name load them all,
    so help and "did you mean" see every command."""

    def get_command(self, ctx: typer.Context, name: str):
        if name in COMMAND_MODULES:
            self._load([COMMAND_MODULES[name]], only=name)
        else:
            self._load(COMMAND_MODULES.values())
        return self.commands.get(name)

    def list_commands(self, ctx: typer.Context) -> list[str]:
        self._load(COMMAND_MODULES.values())
        return [name for name in COMMAND_MODULES if name in self.commands]

    def _load(self, modules, only: str | None = None) -> None:
        """Import the modules (they register on `app`) and build what they registered
        (just the command `only`, if given: building one costs ~1-2 ms)."""
        for module in dict.fromkeys(modules):
            importlib.import_module(module)
        wanted = lambda name: name not in self.commands and only in (None, name)  # noqa: E731
        built = [typer.main.get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                  rich_markup_mode=app.rich_markup_mode)
                 for info in app.registered_commands
                 if wanted(info.name or typer.main.get_command_name(info.callback.__name__))]
        built += [typer.main.get_group_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                 rich_markup_mode=app.rich_markup_mode,
                                                 suggest_commands=app.suggest_commands)
                  for info in app.registered_groups if wanted(info.name)]
        for command in built:
            _skip_pydantic_for_plain_types(command, app.info.context_settings["help_option_names"])
            self.commands[command.name] = command


app = typer.Typer(
    name="blobctl",
    cls=LazyCommands,
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
    # only a --store given on the command line: Config.load reads BLOBCTL_STORE itself, and
    # says which of the two chose the store (config get store)
    source = ctx.get_parameter_source("store")
    ctx.obj = store if source is not None and source.name == "COMMANDLINE" else None


_PLAIN_TYPES = {str: str, Path: Path, list[str]: list, bool: bool, int: int}


def _skip_pydantic_for_plain_types(command, help_names: list[str]) -> None:
    """Give str, Path, list[str] and int parameters (and bool flags that no environment
    variable sets) a direct conversion.

    typer coerces every non-flag value through a pydantic TypeAdapter: importing pydantic
    and building the adapter costs ~60-100 ms per run, more than a small `get` does in
    all. Parameters of other types keep typer's coercion (and its messages).
    """
    from typer._click import Context
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam

    class PlainParam(RuntimeParam):
        def _coerce_value(self, value, param, ctx):
            convert = _PLAIN_TYPES[self.annotation]
            if convert is list:
                return [str(item) for item in value]
            if convert is not int:
                return convert(value)
            try:
                number = int(value)
            except ValueError:
                raise BadParameter(f"{value!r} is not a whole number", ctx=ctx, param=param) from None
            low, high = self.parameter_info.min, self.parameter_info.max
            if low is not None and number < low:
                raise BadParameter(f"{number} is below the minimum, {low}", ctx=ctx, param=param)
            if high is not None and number > high:
                raise BadParameter(f"{number} is above the maximum, {high}", ctx=ctx, param=param)
            return number

    help_option = command.get_help_option(Context(command, help_option_names=help_names))
    for param in [*command.params, help_option]:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or descriptor.annotation not in _PLAIN_TYPES \
                or descriptor.file_annotation is not None \
                or (descriptor.annotation is bool and param.envvar) \
                or (descriptor.annotation is int and descriptor.parameter_info.clamp):
            continue
        param._runtime_param = PlainParam(descriptor.parameter_info, descriptor.annotation)
    for sub in getattr(command, "commands", {}).values():
        _skip_pydantic_for_plain_types(sub, help_names)


def walk_commands() -> Iterator[tuple[list[str], typer.core.TyperCommand | typer.core.TyperGroup, typer.Context]]:
    """(words, command, context) for the app and every command under it, in help order,
    e.g. (['config', 'get'], ...): what the docs generator and the tests walk."""

    def walk(words, command, parent):
        ctx = command.make_context(words[-1] if words else "blobctl", [], parent=parent, resilient_parsing=True)
        yield words, command, ctx
        if isinstance(command, typer.core.TyperGroup):
            for name in command.list_commands(ctx):
                yield from walk(words + [name], command.get_command(ctx, name), ctx)

    yield from walk([], typer.main.get_command(app), None)


COMPLETE_VAR = "_BLOBCTL_COMPLETE"


def _enable_shell_completion() -> None:
    """Register the shell completion classes (blobctl's own where Typer's fall short), which
    `add_completion=False` leaves out; done only when a shell asks (COMPLETE_VAR set), so
    normal start-up stays fast."""
    from blobctl.cli.completion import register

    register()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the
    same clean-up runs (temp files, worker processes) before the command exits."""


#: A second SIGTERM within this many seconds of the first is the same request: GNU
#: `timeout` signals the command and then its whole process group, and ending at once
#: then would skip the clean-up. A later one ends the process at once.
SIGTERM_REPEAT_SECONDS = 1.0


def _on_sigterm(signum, frame) -> None:
    _terminated.append(time.monotonic())
    if len(_terminated) == 1:
        raise _Terminated
    if _terminated[-1] - _terminated[0] > SIGTERM_REPEAT_SECONDS:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


_terminated: list[float] = []  # when each SIGTERM arrived


class _ClosedStream:
    """Stands in for a standard stream the shell closed (`<&-`, `>&-`), which Python
    leaves as None: using it is one clear error instead of an AttributeError."""

    def __init__(self, which: str):
        self._which = which

    def __getattr__(self, attribute: str):
        raise UsageError(f"standard {self._which} is closed", "redirect it, e.g. from or to /dev/null")

    def flush(self) -> None:
        """Nothing to flush (called at exit)."""

    def isatty(self) -> bool:
        """Not a terminal (asked by progress bars even of commands that do not use it)."""
        return False


def _prepare_standard_streams() -> None:
    if sys.stdin is None:
        sys.stdin = _ClosedStream("input")
    if sys.stdout is None:
        sys.stdout = _ClosedStream("output")
    if sys.stderr is None:  # messages are dropped, as with 2>/dev/null; print() would use stdout
        sys.stderr = open(os.devnull, "w")
    for stream in (sys.stdout, sys.stderr):
        # a file name that is not UTF-8 (read with surrogateescape) is printed as its bytes,
        # as sha256sum does, whatever the locale (only C and POSIX make Python do so)
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")


def _report_usage_error(exc: typer.TyperException) -> None:
    """Click's usage errors (missing argument, unknown option...) as one line, like
    blobctl's own, naming the help to read; a group run without a command still gets
    its help text."""
    from blobctl import render

    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    if "\n" in message.strip():
        exc.show()
        return
    context = getattr(exc, "ctx", None)
    hint = f"see '{context.command_path} -h'" if context is not None else None
    render.error_line(str(UsageError(message[:1].lower() + message[1:].rstrip("."), hint)))


def main() -> None:
    """Entry point: run the app, mapping every failure to one line and an exit code.

    Typer already ends a command quietly on Ctrl-C (exit 130) and on a closed output
    pipe such as `| head` (exit 1); everything else is mapped here. SIGTERM ends it as
    Ctrl-C does, with exit 143."""
    from blobctl import render

    _prepare_standard_streams()
    if COMPLETE_VAR in os.environ:
        _enable_shell_completion()
    command = typer.main.get_command(app)
    _skip_pydantic_for_plain_types(command, app.info.context_settings["help_option_names"])
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = command.main(prog_name="blobctl", standalone_mode=False)
    except BlobctlError as exc:
        render.error_line(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:  # typer turns one inside a command into a silent exit 130
        code = EXIT_INTERRUPTED
    except typer.TyperException as exc:  # usage errors from argument parsing
        _report_usage_error(exc)
        code = getattr(exc, "exit_code", EXIT_USAGE)
    except OSError as exc:  # one no layer below mapped: writing stdout to a full disk, say
        error = from_os_error(exc, "use", exc.filename) if exc.filename else \
            BlobctlError(f"cannot write standard output: {(exc.strerror or str(exc)).lower()}")
        render.error_line(str(error))
        code = error.exit_code
    except Exception as exc:  # noqa: BLE001 - only SQLite's "damaged index" is mapped; the rest re-raised
        error = _damaged_index_error(exc)
        if error is None:
            raise
        render.error_line(str(error))
        code = error.exit_code
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # done: nothing left to clean up
    if _terminated:
        code = EXIT_TERMINATED  # typer reports every KeyboardInterrupt as 130
    sys.exit(code or 0)


def _damaged_index_error(exc: Exception) -> BlobctlError | None:
    """An index whose pages are damaged opens (SQLite checks its header only) and fails
    the first query that reads them: one line saying what to run, not a traceback.
    sqlite3 is looked up, not imported: a command that never opened the index has none."""
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is None or not isinstance(exc, sqlite3.DatabaseError) \
            or getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return None
    return BlobctlError(f"the store's index is damaged: {exc}",
                        "'blobctl fsck' sets it aside and rebuilds it from the objects and names")
