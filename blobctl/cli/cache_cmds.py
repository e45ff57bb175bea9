"""gc, pin, unpin, fsck: keeping the cache in bounds and checking it."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from blobctl import render, units
from blobctl.cli import app
from blobctl.cli.common import JsonOption, complete_keys, complete_nothing, open_store
from blobctl.config import SETTINGS
from blobctl.errors import EXIT_INTEGRITY, UsageError
from blobctl.render import Column

KeyArgument = Annotated[str, typer.Argument(metavar="KEY", autocompletion=complete_keys,
                                            help="A hash, sha256:HASH, a unique hash prefix or a name.")]


@app.command()
def gc(
    ctx: typer.Context,
    max_size: Annotated[Optional[str], typer.Option(
        "--max-size", metavar="SIZE", autocompletion=complete_nothing,
        help="Trim to this size (default: config max_size), e.g. '20 GB'; 'none' for no limit.")] = None,
    older_than: Annotated[Optional[str], typer.Option(
        "--older-than", metavar="AGE", autocompletion=complete_nothing,
        help="Also evict what has not been accessed for AGE, e.g. 30d.")] = None,
    grace: Annotated[Optional[str], typer.Option(
        "--grace", metavar="AGE", autocompletion=complete_nothing,
        help="Keep what was accessed within AGE (default: config gc_grace).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; delete nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Evict least recently used objects to fit the size limit.

    Never evicts named, pinned or unpushed objects, or ones accessed within the grace
    period. Also removes stale temp files, expired pins and empty shard directories.
    Prints the plan, then carries it out unless --dry-run (JSON fields: docs/JSON.md).
    """
    from blobctl import gc as collector

    with open_store(ctx) as store:
        # read as the config reads max_size, so that 'none' lifts a configured limit for this run
        limit = SETTINGS["max_size"].parse(max_size) if max_size is not None else store.config.get("max_size")
        plan = collector.plan(store, max_size=limit,
                              older_than=None if older_than is None else units.parse_age(older_than),
                              grace=None if grace is None else units.parse_age(grace))
        if not as_json:
            _render_plan(plan, dry_run)
        with render.progress() as progress:
            outcome = None if dry_run else collector.execute(store, plan, progress)
    if as_json:
        render.emit_json(_gc_json(plan, outcome))
    elif outcome is not None:
        render.message(gc_summary(outcome))


def gc_summary(outcome) -> str:
    """One line saying what a gc run did (shared by gc and the automatic gc after put)."""
    line = f"evicted {render.count(len(outcome.evicted), 'object')} ({render.size(outcome.evicted_bytes)})"
    if outcome.changed:
        line += f"; kept {render.count(outcome.changed, 'object')} accessed, named or pinned since planning"
    if outcome.temps_removed:
        line += f"; removed {render.count(outcome.temps_removed, 'stale temp file')}"
    if outcome.pins_removed:
        line += f"; removed {render.count(outcome.pins_removed, 'expired pin')}"
    return line + f"; store now {render.size(outcome.stored_after)}"


def _render_plan(plan, dry_run: bool) -> None:
    rows = [["before", f"{plan.objects_before:,}", render.size(plan.stored_before)],
            ["evict", f"{len(plan.evict):,}", render.size(plan.evict_bytes)]]
    rows += [[f"kept: {reason.replace('_', ' ')}", f"{objects:,}", render.size(size)]
             for reason, (objects, size) in plan.kept_by_reason().items()]
    rows += [["after", f"{plan.objects_before - len(plan.evict):,}", render.size(plan.stored_after)],
             ["stale temp files", f"{len(plan.stale_temps):,}", render.size(plan.temp_bytes)]]
    render.table([Column(""), Column("objects", "right"), Column("stored", "right")], rows,
                 title="gc plan (dry run: nothing deleted)" if dry_run else "gc plan")


def _gc_json(plan, outcome) -> dict:
    executed = None
    if outcome is not None:
        executed = {"evicted": len(outcome.evicted), "stored": outcome.evicted_bytes,
                    "changed": outcome.changed, "temp_files_removed": outcome.temps_removed,
                    "shard_dirs_removed": outcome.shard_dirs_removed,
                    "expired_pins_removed": outcome.pins_removed}
        after = {"objects": outcome.objects_after, "stored": outcome.stored_after}
    else:
        after = {"objects": plan.objects_before - len(plan.evict), "stored": plan.stored_after}
    return {
        "dry_run": outcome is None, "max_size": plan.max_size, "older_than": plan.older_than,
        "grace": plan.grace,
        "before": {"objects": plan.objects_before, "stored": plan.stored_before},
        "evict": {"objects": len(plan.evict), "stored": plan.evict_bytes,
                  "hashes": [row.hash for row in plan.evict]},
        "kept": {reason: {"objects": objects, "stored": size}
                 for reason, (objects, size) in plan.kept_by_reason().items()},
        "after": after,
        "temp_files": {"files": len(plan.stale_temps), "stored": plan.temp_bytes},
        "executed": executed,
    }


@app.command()
def pin(
    ctx: typer.Context,
    key: KeyArgument,
    ttl: Annotated[Optional[str], typer.Option(
        "--ttl", metavar="AGE", autocompletion=complete_nothing,
        help="Pin for AGE only, e.g. 7d (default: until unpinned).")] = None,
) -> None:
    """Keep an object out of gc's reach, forever or for --ttl.

    Pinning again never shortens a pin: a pin forever stays, and so does one that expires
    later than the new --ttl; unpin removes a pin."""
    from blobctl import pins

    ttl_seconds = None if ttl is None else units.parse_age(ttl)
    if ttl_seconds is not None and ttl_seconds <= 0:  # such a pin would have expired already
        raise UsageError(f"invalid --ttl {ttl!r}: must be more than 0",
                         "e.g. --ttl 7d; without --ttl the pin lasts until unpinned")
    with open_store(ctx) as store:
        digest = store.resolve(key).digest
        expires, changed = pins.pin(store, digest, ttl_seconds)
    if changed:
        until = "until unpinned" if expires is None else f"for {units.format_duration(ttl_seconds)}"
        render.message(f"pinned {digest} {until}")
        return
    remaining = max(1, round((expires - time.time_ns()) / 1e9)) if expires is not None else None
    until = "until unpinned" if remaining is None else f"for {units.format_duration(remaining)} more"
    render.message(f"{digest} stays pinned {until}: a pin is never shortened (unpin removes it)")


@app.command()
def unpin(ctx: typer.Context, key: KeyArgument) -> None:
    """Remove a pin (the object becomes evictable again)."""
    from blobctl import pins

    with open_store(ctx) as store:
        digest = store.resolve(key).digest
        removed = pins.unpin(store, digest)
    render.message(f"unpinned {digest}" if removed else f"{digest} was not pinned")


@app.command()
def fsck(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Move damaged objects to STORE/quarantine/ and rebuild the index.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Verify every object, ref and index row (exit 4 on problems)."""
    from blobctl import fsck as checker

    with open_store(ctx) as store, render.progress() as progress:
        report = checker.check(store, repair=repair, progress=progress)
    if as_json:
        render.emit_json({"objects": report.objects, "refs": report.refs,
                          "clean": not report.remaining,
                          "problems": [{"kind": p.kind, "key": p.key, "detail": p.detail,
                                        "repaired": p.repaired} for p in report.problems]})
    elif report.problems:
        columns = [Column("kind"), Column("key"), Column("detail")]
        render.table(columns + ([Column("repaired")] if repair else []),
                     [[p.kind, p.key, p.detail] + (["yes" if p.repaired else "no"] if repair else [])
                      for p in report.problems])
    render.message(f"checked {render.count(report.objects, 'object')} and {render.count(report.refs, 'ref')}: "
                   f"{render.count(len(report.problems), 'problem')}, {len(report.remaining)} remaining")
    if report.remaining:
        raise typer.Exit(EXIT_INTEGRITY)
