"""put, get, ls, rm, stat: the local store's everyday commands."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from blobctl import keys, render, stats
from blobctl.cli import app
from blobctl.cli.common import JsonOption, complete_keys, complete_nothing, open_store, trim_if_over_limit
from blobctl.errors import BlobctlError, PartialOutputError, UsageError
from blobctl.render import Column


def _parse_range(text: str | None) -> tuple[int, int | None]:
    """'START:END' (END exclusive, either side may be empty) -> (start, end)."""
    if text is None:
        return 0, None
    start, sep, end = text.partition(":")
    # plain decimal digits, not all that int() takes ('+1', '1_0', ' 1')
    valid = sep and all(not part or (part.isascii() and part.isdigit()) for part in (start, end))
    lo, hi = (int(start or 0), int(end) if end else None) if valid else (0, None)
    if not valid or (hi is not None and hi < lo):
        raise UsageError(f"invalid range {text!r}", "use START:END in bytes, e.g. 0:1024 or 4096:")
    return lo, hi


def _read_paths(zero: bool) -> list[str]:
    data = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    return [p for p in data.split("\0" if zero else "\n") if p]


def _put_all(store, paths: list[str], name: str | None, progress, dash_is_stdin: bool):
    """Results (or errors) in input order. One input shows its bytes on the progress bar;
    several show files, and go in parallel unless stdin is among them. `dash_is_stdin`:
    '-' is standard input (an argument), not a file of that name (a path read from stdin)."""
    stdin_at = [position for position, path in enumerate(paths) if path == "-"] if dash_is_stdin else []
    if len(paths) == 1:
        try:
            yield store.put_stream(sys.stdin.buffer, name=name, progress=progress) if stdin_at \
                else store.put_path(paths[0], name=name, progress=progress)
        except BlobctlError as exc:
            yield exc
        return
    progress.start("put", len(paths))
    for outcome in store.put_paths(paths) if not stdin_at else _one_by_one(store, paths):
        progress.advance(1)
        yield outcome


def _one_by_one(store, paths: list[str]):
    for path in paths:
        try:
            yield store.put_stream(sys.stdin.buffer) if path == "-" else store.put_path(path)
        except BlobctlError as exc:
            yield exc


@app.command()
def put(
    ctx: typer.Context,
    files: Annotated[Optional[list[str]], typer.Argument(
        metavar="FILE", help="Files to store; '-' reads standard input.")] = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", "-n", metavar="NAME", autocompletion=complete_keys,
        help="Bind this name to the stored content (one input only).")] = None,
    stdin_paths: Annotated[bool, typer.Option(
        "--stdin-paths", help="Read file paths from stdin, one per line.")] = False,
    zero: Annotated[bool, typer.Option("-z", help="With --stdin-paths: paths are NUL-separated.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Store files by their SHA-256 and print the hash.

    With several inputs, prints "HASH  PATH" lines exactly as sha256sum does."""
    paths = list(files or [])
    if zero and not stdin_paths:
        raise UsageError("-z applies to --stdin-paths: pass both, or neither")
    if stdin_paths:
        if paths:
            raise UsageError("--stdin-paths reads paths from stdin; do not also pass FILE arguments")
        paths = _read_paths(zero)
    elif not paths:
        raise UsageError("nothing to put", "pass FILE..., '-' for stdin, or --stdin-paths")
    if name is not None and len(paths) != 1:
        raise UsageError("--name binds one input; pass exactly one FILE")
    if paths.count("-") > 1 and not stdin_paths:
        raise UsageError("standard input ('-') can be read only once")
    results, failure = [], None
    with open_store(ctx, create=True) as store, render.progress("bytes" if len(paths) == 1 else "items") as progress:
        if name is not None:
            store.check_bindable(name)
        for outcome in _put_all(store, paths, name, progress, dash_is_stdin=not stdin_paths):
            if isinstance(outcome, BlobctlError):
                render.error_line(str(outcome))
                failure = failure or outcome
                continue
            results.append(outcome)
            if not as_json:
                single = len(paths) == 1 and not stdin_paths
                line = outcome.digest if single else render.checksum_line(outcome.digest, outcome.source)
                sys.stdout.write(line + "\n")
        trim_if_over_limit(store)
    if as_json:
        render.emit_json([{"hash": r.digest, "size": r.size, "stored": r.stored,
                           "source": r.source, "created": r.created, "name": r.name}
                          for r in results])
    if failure is not None:
        raise typer.Exit(failure.exit_code)


@app.command()
def get(
    ctx: typer.Context,
    key: Annotated[Optional[str], typer.Argument(
        metavar="KEY", autocompletion=complete_keys,
        help="A hash, sha256:HASH, a unique hash prefix (≥ 4 hex) or a name.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE", help="Write to FILE (atomically) instead of stdout.")] = None,
    byte_range: Annotated[Optional[str], typer.Option(
        "--range", metavar="START:END", autocompletion=complete_nothing,
        help="Only bytes START (inclusive) to END (exclusive).")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Read keys from stdin, one per line, and write each object to stdout as "
                        "'HASH SIZE', newline, the bytes, newline (like git cat-file --batch); "
                        "'KEY missing' for a key that cannot be delivered.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Re-hash large local objects too (verify_reads = sha256 for this command).")] = False,
) -> None:
    """Write an object's original bytes to stdout or a file.

    Every byte is verified while it streams: by its SHA-256, or for a local object of 4 MiB
    or more by zstd's checksums and the hash in its header (config verify_reads). Objects
    up to 8 MiB are verified before the first byte is written, and -o FILE is complete
    and verified or not there at all."""
    if batch:
        if key is not None or output is not None or byte_range is not None:
            raise UsageError("--batch reads keys from stdin and writes to stdout; "
                             "do not also pass KEY, --output or --range")
        with open_store(ctx) as store:
            store.rehash_reads |= verify
            failure = _get_batch(store, sys.stdin.buffer, sys.stdout.buffer)
            trim_if_over_limit(store)
        if failure is not None:
            raise typer.Exit(failure.exit_code)
        return
    if key is None:
        raise UsageError("nothing to get", "pass KEY, or --batch to read keys from stdin")
    start, end = _parse_range(byte_range)
    if output is not None and os.path.basename(output) in ("", ".", ".."):  # Path() drops a '/' or '/.'
        raise UsageError(f"cannot write to {output!r}: -o takes a file name, not a directory")
    with open_store(ctx) as store, render.progress("bytes") as progress:
        store.rehash_reads |= verify
        resolved = store.resolve_to_read(key)
        if output is None or output == "-":  # not './-', a file named '-'
            store.write_to(resolved, sys.stdout.buffer, start, end, progress=progress)
            sys.stdout.buffer.flush()
        else:
            store.export(resolved, Path(output), start, end, progress=progress)
        trim_if_over_limit(store)


def _get_batch(store, keys_in, out) -> BlobctlError | None:
    """Serve each key read from `keys_in`; returns the first failure (after reporting each
    on stderr), or None. A large object that fails verification after its header went out
    leaves the stream unframed, so it stops the batch (PartialOutputError is raised)."""
    failure = None
    for raw in keys_in:
        key = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        try:
            store.write_framed(store.resolve_to_read(key), out)
        except PartialOutputError:
            raise
        except BlobctlError as exc:
            render.error_line(f"{key}: {exc}")
            out.write(f"{key} missing\n".encode("utf-8", "surrogateescape"))
            failure = failure or exc
    out.flush()
    return failure


@app.command("ls")
def list_names(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(metavar="PREFIX", autocompletion=complete_keys,
                                          help="Only names (with --objects, hashes) starting with this.")] = "",
    objects: Annotated[bool, typer.Option("--objects", help="List every object, named or not.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List names with their sizes, or every object with --objects."""
    with open_store(ctx) as store:
        if objects:
            prefix = prefix.lower()  # as get reads hashes
            if prefix and not keys.is_hex(prefix):
                raise UsageError(f"invalid hash prefix {prefix!r}: with --objects, PREFIX is hex digits")
            rows = []
            # two digits or more name a shard: list that one only
            digests = store.match_prefix(prefix) if len(prefix) >= 2 else store.iter_objects()
            for digest in digests:
                if not digest.startswith(prefix):
                    continue
                size, stored, accessed = store.describe(digest)
                rows.append({"hash": digest, "size": size, "stored": stored,
                             "accessed_ns": accessed})
        else:
            rows = [{"name": e.name, "hash": e.digest, "size": e.size, "stored": e.stored}
                    for e in store.list_names(prefix)]
    if as_json:
        render.emit_json(rows)
    elif objects:
        now = time.time_ns()
        render.table([Column("hash"), Column("size", "right"), Column("stored", "right"),
                      Column("accessed", "right")],
                     [[render.short_hash(r["hash"]), render.size(r["size"]), render.size(r["stored"]),
                       render.age(r["accessed_ns"], now)] for r in rows])
    else:
        render.table([Column("name"), Column("size", "right"), Column("stored", "right"), Column("hash")],
                     [[r["name"], render.size(r["size"]), render.size(r["stored"]), render.short_hash(r["hash"])]
                      for r in rows])


@app.command()
def rm(
    ctx: typer.Context,
    keys_: Annotated[list[str], typer.Argument(metavar="KEY", autocompletion=complete_keys,
                                               help="Names or objects to remove.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove an object even if names point at it or it is pinned.")] = False,
) -> None:
    """Remove names or unnamed objects.

    A removed name's object stays until gc; an object that names still point at, or that
    is pinned, is removed only with --force (its pin goes with it)."""
    failure = None
    with open_store(ctx) as store:
        for key in keys_:
            try:
                removed = store.remove(key, force=force)
            except BlobctlError as exc:
                render.error_line(str(exc))
                failure = failure or exc
                continue
            render.message(f"removed {removed.kind} {key}")
    if failure is not None:
        raise typer.Exit(failure.exit_code)


@app.command()
def stat(
    ctx: typer.Context,
    keys_: Annotated[Optional[list[str]], typer.Argument(metavar="KEY", autocompletion=complete_keys,
                                                         help="Keys to describe.")] = None,
    as_json: JsonOption = False,
    zero: Annotated[bool, typer.Option("--zero", help="Reset the hit/miss counters, then show the summary.")] = False,
) -> None:
    """Summarise the store, or describe keys.

    The summary shows sizes, compression and the hit/miss counters; with KEYs, one row per
    key, with its pin: 'forever', the time left, or '-'."""
    if zero and keys_:
        raise UsageError("--zero resets the store's counters; it takes no KEY")
    with open_store(ctx) as store:
        if zero:
            store.zero_counters()
            render.message("counters reset")
        if keys_:
            infos, failure = [], None
            for key in keys_:
                try:
                    infos.append(store.info(key))
                except BlobctlError as exc:
                    render.error_line(str(exc))
                    failure = failure or exc
            _render_key_infos(infos, as_json)
            if failure is not None:
                raise typer.Exit(failure.exit_code)
            return
        summary = store.summary()
    if as_json:
        render.emit_json({"path": summary.path, "objects": summary.objects, "names": summary.names,
                          "size": summary.size, "stored": summary.stored, "max_size": summary.max_size,
                          "counters": {k: summary.counters.get(k, 0) for k, _ in stats.STORE_COUNTERS}})
        return
    rows = [["store", summary.path], ["objects", f"{summary.objects:,}"], ["names", f"{summary.names:,}"],
            ["original size", render.size(summary.size)], ["stored size", render.size(summary.stored)],
            ["compression", render.ratio(summary.size, summary.stored)],
            ["size limit", render.size(summary.max_size) if summary.max_size is not None else "none"]]
    rows += [[label, f"{summary.counters.get(k, 0):,}" if "bytes" not in k
              else render.size(summary.counters.get(k, 0))] for k, label in stats.STORE_COUNTERS]
    render.table([Column("field"), Column("value", "right")], rows)


def _render_key_infos(infos: list, as_json: bool) -> None:
    if as_json:
        render.emit_json([{"key": i.key, "hash": i.digest, "local": i.local, "size": i.size,
                           "stored": i.stored, "accessed_ns": i.accessed_ns, "names": list(i.names),
                           "pinned": i.pinned, "pin_expires_ns": i.pin_expires_ns}
                          for i in infos])
        return
    now = time.time_ns()
    pins = any(i.pinned for i in infos)  # a column only when it says something: tables must fit 80 columns
    render.table([Column("key"), Column("hash"), Column("size", "right"), Column("stored", "right"),
                  Column("ratio", "right"), Column("accessed", "right")] + [Column("pinned", "right")] * pins,
                 [[i.key, render.short_hash(i.digest), render.size(i.size), render.size(i.stored),
                   render.ratio(i.size, i.stored), render.age(i.accessed_ns, now)] + [_pin_cell(i, now)] * pins
                  for i in infos])


def _pin_cell(info, now: int) -> str:
    """'forever', the time left ('6d left'), or '-' when not pinned."""
    if not info.pinned:
        return "-"
    if info.pin_expires_ns is None:
        return "forever"
    return render.time_left(info.pin_expires_ns, now)
