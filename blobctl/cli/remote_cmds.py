"""mount, umount, push, pull: remote stores overlaid at key prefixes."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from blobctl import render
from blobctl.cli import app
from blobctl.cli.common import (JsonOption, check_store_directory, complete_keys, complete_mount_prefixes,
                                complete_nothing, load_config, open_store, trim_if_over_limit)
from blobctl.errors import warn
from blobctl.render import Column


@app.command()
def mount(
    ctx: typer.Context,
    prefix: Annotated[Optional[str], typer.Argument(
        metavar="PREFIX", autocompletion=complete_nothing,
        help="Key prefix to overlay ('' for every name).")] = None,
    remote: Annotated[Optional[str], typer.Argument(
        metavar="REMOTE", help="A directory, file://, http(s):// or s3://bucket/prefix URL.")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Never write to this remote.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Mount a remote store at a prefix, or list mounts.

    Reads of names under PREFIX fall through to REMOTE and are cached locally after
    verification; writes stay local until push. Without arguments, a table of the mounts
    with their fetched, hit, miss and unpushed counts."""
    if prefix is not None and remote is not None:
        config = load_config(ctx)
        check_store_directory(config)
        added = config.add_mount(prefix, remote, read_only=read_only)
        render.message(f"mounted {_masked(added.remote)} at {added.prefix or '(every name)'}"
                       + (" read-only" if added.read_only else ""))
        return
    if prefix is not None:
        raise typer.BadParameter("give both PREFIX and REMOTE, or neither to list mounts")
    with open_store(ctx) as store:
        statuses = store.overlay.status() if store.overlay is not None else []
    rows = [{"prefix": s.mount.prefix, "remote": _masked(s.mount.remote), "read_only": s.mount.read_only,
             "fetched_objects": s.fetched_objects, "fetched_bytes": s.fetched_bytes,
             "hits": s.hits, "misses": s.misses, "unpushed": s.unpushed} for s in statuses]
    if as_json:
        render.emit_json(rows)
        return
    render.table([Column("prefix"), Column("remote"), Column("mode"), Column("fetched", "right"),
                  Column("bytes", "right"), Column("hits", "right"), Column("misses", "right"),
                  Column("unpushed", "right")],
                 [[r["prefix"] or "''", r["remote"], "ro" if r["read_only"] else "rw",
                   str(r["fetched_objects"]), render.size(r["fetched_bytes"]), str(r["hits"]),
                   str(r["misses"]), str(r["unpushed"])] for r in rows])


def _masked(url: str) -> str:
    from blobctl.backends.common import mask_url

    return mask_url(url)


@app.command()
def umount(ctx: typer.Context,
           prefix: Annotated[str, typer.Argument(metavar="PREFIX", autocompletion=complete_mount_prefixes,
                                                 help="The mounted prefix.")]) -> None:
    """Remove a mount; local data, including unpushed names, stays.

    Names under it whose objects gc evicted (the remote had them) cannot be read once it
    is gone, unless another mount holds them: umount says how many."""
    with open_store(ctx) as store:
        removed, unreadable = store.unmount(prefix)
    render.message(f"unmounted {_masked(removed.remote)} from {removed.prefix or '(every name)'}")
    if unreadable:
        warn(f"{len(unreadable)} name(s) under {removed.prefix or '(every name)'} point at objects that "
             f"only a remote holds, e.g. {unreadable[0]}: mount it again to read them, or 'blobctl pull' "
             "them first next time")


JobsOption = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", min=1, max=256, metavar="N", autocompletion=complete_nothing,
    help="Parallel transfers (default: config 'jobs').")]


@app.command()
def push(
    ctx: typer.Context,
    prefix: Annotated[Optional[str], typer.Argument(metavar="PREFIX", autocompletion=complete_mount_prefixes,
                                                    help="Only this name and the names under it "
                                                         "('team' is not 'teamwork').")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be pushed.")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Push every name as if unpushed: a remote that lost or damaged objects gets "
                        "them again (each object it has is downloaded and verified).")] = False,
    jobs: JobsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload unpushed objects, then their names, to mounts.

    Objects go first so that a remote never holds a name whose object is missing."""
    with open_store(ctx) as store:
        with render.progress() as progress:
            reports = store.mounted().push(prefix, dry_run=dry_run, check=check,
                                           jobs=jobs or store.config.get("jobs"), progress=progress)
    rows = [{"prefix": r.prefix, "remote": _masked(r.remote), "objects": r.objects, "bytes": r.bytes,
             "skipped": r.skipped, "refs": r.refs, "seconds": round(r.seconds, 3),
             "pending": r.pending_names if dry_run else [], "error": _error_text(r.failure)} for r in reports]
    if as_json:
        render.emit_json(rows)
    elif dry_run:
        render.emit_lines([name for r in rows for name in r["pending"]])
        render.message(f"{render.count(sum(len(r['pending']) for r in rows), 'name')} would be pushed")
    else:
        render.table([Column("prefix"), Column("remote"), Column("objects", "right"), Column("bytes", "right"),
                      Column("skipped", "right"), Column("names", "right"), Column("seconds", "right")],
                     [[r["prefix"] or "''", r["remote"], str(r["objects"]), render.size(r["bytes"]),
                       str(r["skipped"]), str(r["refs"]), f"{r['seconds']:.2f}"] for r in rows])
    _fail_after_report(reports)


@app.command()
def pull(
    ctx: typer.Context,
    targets: Annotated[list[str], typer.Argument(metavar="PREFIX|KEY", autocompletion=complete_keys,
                                                 help="Mount prefixes (every remote name under them) or keys.")],
    jobs: JobsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prefetch objects and names from mounts into the local store.

    Use it before going offline: every remote name under a mount prefix, or the given keys."""
    with open_store(ctx, create=True) as store:
        with render.progress() as progress:
            reports = store.mounted().pull(targets, jobs=jobs or store.config.get("jobs"), progress=progress)
        trim_if_over_limit(store)
    rows = [{"target": r.target, "names": r.names, "fetched": r.fetched, "bytes": r.bytes,
             "present": r.present, "error": _error_text(r.failure)} for r in reports]
    if as_json:
        render.emit_json(rows)
    else:
        render.table([Column("target"), Column("names", "right"), Column("fetched", "right"),
                      Column("bytes", "right"), Column("already local", "right")],
                     [[r["target"] or "''", str(r["names"]), str(r["fetched"]), render.size(r["bytes"]),
                       str(r["present"])] for r in rows])
    _fail_after_report(reports)


def _error_text(failure) -> str | None:
    """A report's failure as its error line says it (for --json), or None."""
    return None if failure is None else str(failure)


def _fail_after_report(reports) -> None:
    """Each failure of a push or pull, after its report (what did go through is shown
    either way); the exit code is the first one's."""
    failures = [r.failure for r in reports if r.failure is not None]
    for failure in failures:
        render.error_line(str(failure))
    if failures:
        raise typer.Exit(failures[0].exit_code)
