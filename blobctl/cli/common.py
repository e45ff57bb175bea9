"""Pieces shared by the command modules: the store for this command and option aliases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from blobctl.config import Config

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def load_config(ctx: typer.Context) -> Config:
    return Config.load(ctx.find_root().obj)


@contextmanager
def open_store(ctx: typer.Context) -> Iterator["Store"]:  # noqa: F821 - imported lazily
    """The store for this command; closed (counters committed, writes synced) at the end."""
    from blobctl.store import Store

    store = Store(load_config(ctx))
    try:
        yield store
    finally:
        store.close()
