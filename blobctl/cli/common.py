"""Pieces shared by the command modules: the store for this command and option aliases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from blobctl import render
from blobctl.config import Config
from blobctl.errors import BlobctlError, warn

if TYPE_CHECKING:
    from blobctl.store import Store

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def load_config(ctx: typer.Context) -> Config:
    return Config.load(ctx.find_root().obj)


@contextmanager
def open_store(ctx: typer.Context) -> Iterator[Store]:
    """The store for this command; closed (counters committed, writes synced) at the end."""
    from blobctl.store import Store

    store = Store(load_config(ctx))
    try:
        yield store
    finally:
        store.close()


def trim_if_over_limit(store) -> None:
    """Automatic gc after a command that added objects (put, or a fetch from a mount) took
    the store over max_size; a failure here only warns, it does not undo the command."""
    if not store.written_objects:
        return
    from blobctl import gc
    from blobctl.cli.cache_cmds import gc_summary

    try:
        outcome = gc.auto_trim(store)
    except BlobctlError as exc:
        warn(f"automatic gc failed: {exc}")
        return
    if outcome is not None and outcome.evicted:
        render.message(f"automatic gc: {gc_summary(outcome)}")
    elif outcome is not None:
        warn(f"the store ({render.size(outcome.stored_after)}) is over max_size, "
             "but everything in it is named, pinned, unpushed or within gc_grace")
