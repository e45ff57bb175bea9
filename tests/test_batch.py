"""`blobctl get --batch`: git cat-file --batch framing, verification before a header goes
out, and carrying on past bad keys — through the real command."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.reliability import object_file


def parse_batch(out: bytes) -> list[tuple[str, bytes | None]]:
    """(header key or hash, bytes or None for 'missing') in order, checking the framing."""
    entries = []
    while out:
        header, _, out = out.partition(b"\n")
        first, second = header.decode().rsplit(" ", 1)
        if second == "missing":
            entries.append((first, None))
            continue
        size = int(second)
        body, out = out[:size], out[size:]
        assert out[:1] == b"\n", "each object is followed by a newline"
        out = out[1:]
        assert hashlib.sha256(body).hexdigest() == first
        entries.append((first, body))
    return entries


def put(blobctl, tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return blobctl("put", path, check=True).text.strip()


def test_batch_streams_objects_in_input_order(blobctl, tmp_path):
    first = put(blobctl, tmp_path, "a", b"alpha\n")
    second = put(blobctl, tmp_path, "b", b"")
    blobctl("put", "--name", "docs/b", tmp_path / "b", check=True)
    keys = f"{second}\n{first[:8]}\nsha256:{first}\ndocs/b\n".encode()

    result = blobctl("get", "--batch", input=keys)

    assert result.code == 0, result.err
    assert parse_batch(result.out) == [(second, b""), (first, b"alpha\n"), (first, b"alpha\n"),
                                       (second, b"")]


def test_batch_reports_bad_keys_and_keeps_going(blobctl, tmp_path):
    digest = put(blobctl, tmp_path, "a", b"alpha\n")
    keys = f"no-such-name\n{'0' * 64}\nbad name!\n{digest}\n".encode()

    result = blobctl("get", "--batch", input=keys)

    assert result.code == 3  # the first failure (not found) decides the exit code
    assert parse_batch(result.out) == [("no-such-name", None), ("0" * 64, None),
                                       ("bad name!", None), (digest, b"alpha\n")]
    assert result.err.count("blobctl: error:") == 3
    assert "no-such-name" in result.err and "bad name!" in result.err


def test_batch_verifies_small_objects_before_their_header(blobctl, tmp_path, store_dir):
    good = put(blobctl, tmp_path, "good", b"good content\n" * 100)
    bad = put(blobctl, tmp_path, "bad", b"bad content\n" * 100)
    damaged = object_file(store_dir, bad)
    damaged.chmod(0o644)
    frame = bytearray(damaged.read_bytes())
    frame[-8] ^= 0xFF  # inside the last block / checksum
    damaged.write_bytes(bytes(frame))

    result = blobctl("get", "--batch", input=f"{bad}\n{good}\n".encode())

    assert result.code == 4
    assert parse_batch(result.out) == [(bad, None), (good, b"good content\n" * 100)]
    assert "damaged" in result.err


def test_batch_stops_on_a_large_object_damaged_mid_stream(blobctl, tmp_path, store_dir):
    data = os.urandom(12 << 20)  # above VERIFY_BEFORE_EMIT_SIZE: streamed, not buffered
    big = put(blobctl, tmp_path, "big", data)
    small = put(blobctl, tmp_path, "small", b"after\n")
    damaged = object_file(store_dir, big)
    damaged.chmod(0o644)
    frame = bytearray(damaged.read_bytes())
    frame[len(frame) // 2] ^= 0xFF
    damaged.write_bytes(bytes(frame))

    result = blobctl("get", "--batch", input=f"{big}\n{small}\n".encode())

    assert result.code == 4
    assert result.out.startswith(f"{big} {len(data)}\n".encode())
    assert not result.out.endswith(b"after\n\n"), "the batch stops once framing is lost"
    assert "incomplete" in result.err


def test_batch_serves_a_large_object_whole(blobctl, tmp_path):
    data = os.urandom(5 << 20) + b"text " * (1 << 20)
    digest = put(blobctl, tmp_path, "big", data)

    result = blobctl("get", "--batch", input=f"{digest}\n".encode())

    assert result.code == 0, result.err
    assert parse_batch(result.out) == [(digest, data)]


def test_batch_takes_no_key_or_output(blobctl, tmp_path):
    digest = put(blobctl, tmp_path, "a", b"alpha\n")

    result = blobctl("get", "--batch", digest, input=b"")

    assert result.code == 2
    assert "--batch" in result.err


def test_batch_records_each_access_once_per_command(blobctl, tmp_path):
    digests = [put(blobctl, tmp_path, f"f{i}", f"content {i}\n".encode()) for i in range(3)]

    result = blobctl("get", "--batch", input=("\n".join(digests) + "\n").encode(), check=True)
    stats = blobctl("stat", "--json", check=True)

    assert len(parse_batch(result.out)) == 3
    assert '"local_hits": 3' in stats.text
    assert all("ago" in line or "s ago" in line for line in
               blobctl("stat", *digests, check=True).text.splitlines()[1:])
