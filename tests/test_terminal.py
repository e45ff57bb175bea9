"""blobctl in a real 80x40 terminal (tmux): tables fit without wrapping, and only data
reaches stdout even when stderr is a terminal that gets progress bars."""

import json
import os
import shlex
import subprocess
import time
import uuid
from hashlib import sha256
from pathlib import Path

import pytest

from tests.conftest import blobctl_executable
from tests.test_docs import require_tool

DONE = "__blobctl_test_done__"


@pytest.fixture
def terminal(tmp_path):
    """Run a shell command line in a fresh 80-column tmux pane; returns what the pane shows."""
    tmux = require_tool("tmux")
    socket = f"blobctl-test-{uuid.uuid4().hex[:8]}"
    env = {name: os.environ[name] for name in ("BLOBCTL_STORE", "BLOBCTL_CONFIG", "NO_COLOR")}
    env["PATH"] = f"{Path(blobctl_executable()[0]).parent}:{os.environ['PATH']}"
    prefix = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())

    def run(command_line: str) -> list[str]:
        script = f"cd {shlex.quote(str(tmp_path))}; {command_line}; echo {DONE}; sleep 60"
        subprocess.run([tmux, "-L", socket, "new-session", "-d", "-x", "80", "-y", "40",
                        f"{prefix} bash --norc -c {shlex.quote(script)}"], check=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            shown = subprocess.run([tmux, "-L", socket, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if DONE in shown:
                subprocess.run([tmux, "-L", socket, "kill-session"])
                return [line.rstrip() for line in shown.split(DONE)[0].splitlines() if line.strip()]
            time.sleep(0.1)
        pytest.fail(f"the command did not finish in tmux: {shown}")

    yield run
    subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True)


@pytest.fixture
def populated(blobctl, tmp_path):
    long_name = "datasets/very/long/path/to/some/training-data-shard-00042-of-00100.parquet"
    for name in ["datasets/mnist.npz", "models/m.bin", long_name]:
        blobctl("put", "--name", name, "-", input=os.urandom(5000) + name.encode(), check=True)
    (tmp_path / "remote").mkdir()
    blobctl("mount", "team", tmp_path / "remote", check=True)
    blobctl("put", "--name", "team/model.bin", "-", input=b"weights" * 100_000, check=True)
    return long_name


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines if line.startswith("│")]


def test_tables_fit_80_columns(terminal, populated, tmp_path):
    lines = terminal("blobctl stat; blobctl ls --objects; blobctl stat datasets/mnist.npz; blobctl mount")
    assert all(len(line) <= 80 for line in lines)
    rows = table_rows(lines)
    assert ["original size"] == [row[0] for row in rows if row[0] == "original size"]
    hashes = [row[0] for row in rows if len(row) == 4 and len(row[0]) == 12]
    assert len(hashes) == 4 and all(int(h, 16) >= 0 for h in hashes)  # one row per object, not wrapped
    assert ["datasets/mnist.npz"] == [row[0] for row in rows if row[0].startswith("datasets/")]
    mount_rows = [row for row in rows if len(row) == 8]  # a long remote path folds within its column
    assert mount_rows[0][0] == "team/" and "".join(row[1] for row in mount_rows) == str(tmp_path / "remote")


def test_long_names_fold_inside_their_column(terminal, populated):
    rows = table_rows(terminal("blobctl ls"))
    assert "".join(row[0] for row in rows if row[0] and not row[0].startswith(("models", "team"))
                   and row[0] != "datasets/mnist.npz") == populated
    assert all(len(row) == 4 for row in rows)


def test_only_data_reaches_stdout_when_stderr_is_a_terminal(terminal, populated, tmp_path):
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
    terminal("blobctl ls > ls.txt; blobctl push --json > push.json; blobctl stat --json > stat.json; "
             "blobctl put a.bin b.bin > put.txt; h=$(blobctl put a.bin); echo \"$h\" > one.txt; "
             "printf 'a.bin\\nb.bin\\n' | blobctl put --stdin-paths > paths.txt; "
             "blobctl get -o got.bin $h >&-")
    sums = [f"{sha256((tmp_path / name).read_bytes()).hexdigest()}  {name}" for name in ("a.bin", "b.bin")]
    assert (tmp_path / "put.txt").read_text().splitlines() == sums
    assert (tmp_path / "paths.txt").read_text().splitlines() == sums
    assert (tmp_path / "one.txt").read_text().strip() == sums[0].split()[0]
    assert (tmp_path / "got.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()  # stdout closed: unused
    listing = (tmp_path / "ls.txt").read_text().splitlines()
    assert listing[0].split() == ["name", "size", "stored", "hash"] and len(listing) == 5
    assert "\x1b" not in (tmp_path / "ls.txt").read_text()
    assert json.loads((tmp_path / "push.json").read_text())[0]["refs"] == 1
    assert json.loads((tmp_path / "stat.json").read_text())["names"] == 4


def test_paths_in_tables_are_shown_as_they_are_not_as_markup(terminal, blobctl, tmp_path):
    """A store at 'a[/b]' made stat fail (rich.errors.MarkupError), and a remote path
    holding '[red]' lost it and turned red."""
    store, remote = tmp_path / "a[" / "b]", tmp_path / "r[red]x"
    remote.mkdir()
    blobctl("--store", store, "mount", "team", remote, check=True)
    at = f"--store {shlex.quote(str(store))}"
    lines = terminal(f"blobctl {at} stat; blobctl {at} mount; echo exit=$?")
    assert "exit=0" in lines and not any("Error" in line for line in lines)
    mount_rows = [row for row in table_rows(lines) if len(row) == 8]
    assert "".join(row[1] for row in mount_rows) == str(remote)
