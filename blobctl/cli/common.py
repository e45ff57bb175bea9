"""Pieces shared by the command modules: the store for this command, option aliases and
shell-completion callbacks."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from blobctl import render
from blobctl.config import Config
from blobctl.errors import BlobctlError, NotFoundError, warn

if TYPE_CHECKING:
    from blobctl.store import Store

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def load_config(ctx: typer.Context, *, validate: bool = True) -> Config:
    """The config for --store; `validate` off for the commands that edit a config file,
    which must be able to mend a bad value in it."""
    return Config.load(ctx.find_root().obj, validate=validate)


def check_store_directory(config: Config) -> None:
    """For commands that write the store's config without opening it (config set, mount):
    refuse a directory that holds other things (blobctl.store.check_store_directory)."""
    from blobctl import store

    store.check_store_directory(config.store_path)


@contextmanager
def open_store(ctx: typer.Context, *, create: bool = False) -> Iterator[Store]:
    """The store for this command; closed (counters committed, writes synced) at the end.
    Only a command that stores something (`create`) makes a store where no directory is:
    `ls` or `gc --dry-run` on a mistyped --store, or on a backup disk not mounted, must
    say so rather than answer for a new empty store. The default store is made by any."""
    from blobctl.store import Store

    config = load_config(ctx)
    if not create and config.store_origin != "default" and not os.path.lexists(config.store_path):
        raise NotFoundError(f"no blobctl store at {config.store_path} (from {config.store_origin})",
                            "check the path; a put or pull there creates the store")
    store = Store(config)
    try:
        yield store
    finally:
        store.close()


COMPLETION_LIMIT = 1000  # names offered at most: completion must answer at once, even on a huge store


def silent_completion(complete: Callable[[typer.Context, str], list[str]]) -> Callable[[typer.Context, str], list[str]]:
    """Completion runs inside the user's shell and must never print: any failure (broken
    config, unreadable store) completes nothing."""

    @functools.wraps(complete)
    def guarded(ctx: typer.Context, incomplete: str) -> list[str]:
        try:
            return complete(ctx, incomplete)
        except Exception:
            return []

    return guarded


@silent_completion
def complete_nothing(ctx: typer.Context, incomplete: str) -> list[str]:
    """For a value that is never a file name (a size, an age, a count): no candidates,
    so that the shell does not offer file names instead."""
    return []


@silent_completion
def complete_mount_prefixes(ctx: typer.Context, incomplete: str) -> list[str]:
    """Mounted prefixes (from the store's config) starting with what was typed."""
    return _mount_prefixes(_completion_config(ctx), incomplete)


@silent_completion
def complete_keys(ctx: typer.Context, incomplete: str) -> list[str]:
    """Mount prefixes, then local names, starting with what was typed."""
    config = _completion_config(ctx)
    return _mount_prefixes(config, incomplete) + _local_names(config.store_path / "refs", incomplete)


def _completion_config(ctx: typer.Context) -> Config:
    # The root callback has not run during completion, so --store is read from the parsed params.
    return Config.load(ctx.find_root().params.get("store"))


def _mount_prefixes(config: Config, incomplete: str) -> list[str]:
    return [m.prefix for m in config.mounts if m.prefix and m.prefix.startswith(incomplete)]


def _local_names(refs: Path, incomplete: str) -> list[str]:
    """Names under refs/ starting with `incomplete`, walking only the directories that can
    hold them; read straight from the files because opening a Store would create one where
    none exists."""
    head = incomplete.rpartition("/")[0]
    if ".." in head.split("/"):
        return []
    names: list[str] = []
    for directory, subdirs, files in os.walk(refs / head if head else refs):
        rel = os.path.relpath(directory, refs)
        base = "" if rel == "." else rel + "/"
        subdirs[:] = sorted(d for d in subdirs
                            if (base + d + "/").startswith(incomplete) or incomplete.startswith(base + d + "/"))
        names += [base + f for f in sorted(files) if (base + f).startswith(incomplete)]
        if len(names) >= COMPLETION_LIMIT:
            return names[:COMPLETION_LIMIT]
    return names


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
