"""All output formatting: rich tables on a terminal, aligned plain text when piped, JSON
for scripts. Data goes to stdout only; messages go to stderr. rich is imported only when
a table is drawn on a terminal, so piped and scripted use stays fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from blobctl.errors import one_line
from blobctl.units import format_age, format_count, format_size


class Column(NamedTuple):
    header: str
    align: str = "left"  # or "right"


def quiet_enabled() -> bool:
    return os.environ.get("BLOBCTL_QUIET", "") not in ("", "0")


def checksum_line(digest: str, path: str) -> str:
    """'HASH  PATH' as sha256sum prints it: a path with a backslash, newline or carriage
    return is escaped and the line starts with a backslash, so that every line is one
    file and `sha256sum -c` reads it back."""
    if not any(c in path for c in "\\\n\r"):
        return f"{digest}  {path}"
    escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"\\{digest}  {escaped}"


def message(text: str) -> None:
    """A note for the human at the terminal (stderr; silenced by --quiet)."""
    if not quiet_enabled():
        print(text, file=sys.stderr)


def error_line(text: str) -> None:
    print(f"blobctl: error: {one_line(text)}", file=sys.stderr)


def emit_json(value: Any) -> None:
    import json  # only --json output pays for it

    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def emit_lines(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """A table on stdout: rich when stdout is a terminal, aligned text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text  # plain text: a path like 'a[/b]' is not markup

        grid = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
        for column in columns:
            grid.add_column(column.header, justify=column.align, overflow="fold")
        for row in rows:
            grid.add_row(*map(Text, row))
        Console(file=sys.stdout, highlight=False).print(grid)
        return
    widths = [max([len(c.header)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(w) if col.align == "right" else cell.ljust(w)
                 for cell, w, col in zip(cells, widths, columns)]
        return "  ".join(parts).rstrip()

    lines = ([title] if title else []) + [line([c.header for c in columns])]
    emit_lines(lines + [line(r) for r in rows])


def count(n: int, noun: str) -> str:
    return format_count(n, noun)


def short_hash(digest: str) -> str:
    """The first 12 hex digits: keeps tables within 80 columns and still works as a `get`
    prefix (an ambiguous one is reported with its candidates); JSON keeps the full hash."""
    return digest[:12]


def size(n: int | None) -> str:
    return format_size(n)


def ratio(size_: int | None, stored: int | None) -> str:
    return f"{size_ / stored:.2f}x" if size_ is not None and stored else "-"


def age(ns: int | None, now_ns: int) -> str:
    return "-" if ns is None else format_age((now_ns - ns) / 1e9) + " ago"


def time_left(ns: int, now_ns: int) -> str:
    """How long until `ns`: '6d left' (the largest whole unit, as age() shows)."""
    return format_age((ns - now_ns) / 1e9) + " left"


class _SilentProgress:
    """Progress that shows nothing: stderr is not a terminal, or --quiet."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


class _BarProgress(_SilentProgress):
    def __init__(self, bar):
        self._bar, self._task = bar, None

    def start(self, description: str, total: int | None) -> None:
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)


@contextmanager
def progress(unit: str = "items") -> Iterator[_SilentProgress]:
    """A progress bar on stderr, only when stderr is a terminal and not --quiet; the
    caller names each task with start() and counts `unit` ('items' or 'bytes')."""
    if quiet_enabled() or not sys.stderr.isatty():
        yield _SilentProgress()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    # rich would take over sys.stdout too, and print data lines on its console: stderr.
    # Only when stdout is a terminal as well does drawing them above the bar help.
    with Progress(TextColumn("{task.description}"), BarColumn(), amount, TimeRemainingColumn(),
                  console=Console(file=sys.stderr), transient=True,
                  redirect_stdout=sys.stdout.isatty()) as bar:
        yield _BarProgress(bar)
