"""End-to-end: the installed `blobctl` command in a subprocess, as a shell user runs it."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import Result, blobctl_executable
from tests.reliability import leftover_temp_files, mounted, read_only_view, sha
from tests.workers import alive, worker_processes

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY = 2, 3, 4


def shell(command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a shell pipeline with the venv's blobctl first on PATH."""
    env = {**os.environ, "PATH": f"{Path(blobctl_executable()[0]).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, env=env, **kwargs)


def one_line_error(result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert lines[0].startswith("blobctl: error: ")
    return lines[0]


@pytest.fixture
def files(tmp_path):
    made = {}
    for name, size in [("small", 100), ("medium", 300_000), ("big", 6 << 20)]:
        path = tmp_path / name
        path.write_bytes(os.urandom(size // 2) + b"text " * (size // 10))
        made[name] = path
    return made


def test_version_and_help(blobctl):
    assert blobctl("--version").text.startswith("blobctl 0.")
    help_text = blobctl("--help").text
    for command in ["put", "get", "ls", "rm", "stat", "config"]:
        assert command in help_text


def test_put_prints_what_sha256sum_prints(blobctl, files):
    result = blobctl("put", files["big"], check=True)
    assert result.text == sha(files["big"].read_bytes()) + "\n"
    expected = subprocess.run(["sha256sum", files["small"], files["medium"]], capture_output=True).stdout
    assert blobctl("put", files["small"], files["medium"], check=True).out == expected


def test_pipeline_round_trip_with_cmp_and_sha256sum(files, tmp_path):
    pipeline = shell(f"cat {files['big']} | blobctl put - > {tmp_path}/h && blobctl get $(cat {tmp_path}/h) "
                     f"| cmp - {files['big']} && blobctl get $(cut -c1-8 {tmp_path}/h) | sha256sum")
    assert pipeline.returncode == 0, pipeline.stderr
    assert pipeline.stdout.decode().split()[0] == sha(files["big"].read_bytes())
    check = shell(f"blobctl put {files['small']} {files['medium']} | sha256sum -c -")
    assert check.returncode == 0 and check.stdout.count(b": OK") == 2


def test_get_output_file_and_range(blobctl, files, tmp_path):
    data = files["big"].read_bytes()
    blobctl("put", "--name", "data/big.bin", files["big"], check=True)
    out = tmp_path / "copy"
    assert blobctl("get", "data/big.bin", "-o", out).code == 0
    assert out.read_bytes() == data
    assert blobctl("get", "data/big.bin", "--range", "1000:5000").out == data[1000:5000]
    assert blobctl("get", "data/big.bin", "--range", f"{len(data) - 3}:").out == data[-3:]
    assert blobctl("get", "data/big.bin", "--range", "9:2").code == EXIT_USAGE
    counted = json.loads(blobctl("stat", "--json").out)["counters"]["bytes_read"]
    assert counted == len(data) + 4000 + 3  # what each get wrote out, not whole objects


def test_put_lines_match_sha256sum_for_odd_file_names(blobctl, tmp_path):
    """A name with a newline or backslash is escaped as sha256sum escapes it, so each
    line is one file and `sha256sum -c` checks the output."""
    paths = [tmp_path / name for name in ("plain", "new\nline", "back\\slash")]
    for path in paths:
        path.write_bytes(path.name.encode())
    ours = blobctl("put", *paths, check=True).out
    theirs = subprocess.run(["sha256sum", *map(str, paths)], capture_output=True, check=True).stdout
    assert ours == theirs and len(ours.splitlines()) == 3
    subprocess.run(["sha256sum", "-c", "--quiet", "-"], input=ours, check=True)


def test_put_of_proc_files_whose_size_says_zero(blobctl):
    """/proc files report size 0 but have content, as sha256sum and cp know."""
    content = Path("/proc/version").read_bytes()
    assert os.stat("/proc/version").st_size == 0 and content
    assert blobctl("put", "/proc/version", check=True).text.strip() == sha(content)
    assert blobctl("get", sha(content), check=True).out == content


def test_get_output_to_what_is_already_there(blobctl, files, tmp_path):
    """-o treats an existing destination as cp does: a file keeps its permissions, a
    symlink is written through, and a FIFO or device is written to, not replaced."""
    data = files["small"].read_bytes()
    blobctl("put", "--name", "x", files["small"], check=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"old")
    secret.chmod(0o600)
    blobctl("get", "x", "-o", secret, check=True)
    assert secret.read_bytes() == data and secret.stat().st_mode & 0o777 == 0o600
    link, target = tmp_path / "link", tmp_path / "target"
    link.symlink_to(target)
    blobctl("get", "x", "-o", link, check=True)
    assert link.is_symlink() and target.read_bytes() == data
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    blobctl("get", "x", "-o", fifo, check=True)
    assert reader.communicate(timeout=20)[0] == data and fifo.is_fifo()
    blobctl("get", "x", "-o", "/dev/null", check=True)
    assert Path("/dev/null").is_char_device()


def test_get_o_to_one_of_the_shells_descriptors_writes_through_it(files, tmp_path):
    """-o /dev/stdout (or /dev/fd/N) is the descriptor the shell set up: into a pipe, or
    appended to a redirected file at its offset, never a file renamed over it."""
    small = files["small"]
    data = small.read_bytes()
    log = tmp_path / "log"
    commands = (f"blobctl put --name x {small} >/dev/null && blobctl get x -o /dev/stdout | cat > {tmp_path}/piped && "
                f"{{ echo first; blobctl get x -o /dev/stdout; echo last; }} > {log} && "
                f"{{ echo more >&5; blobctl get x -o /dev/fd/5; }} 5>> {log}")
    result = shell(commands)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "piped").read_bytes() == data
    assert log.read_bytes() == b"first\n" + data + b"last\n" + b"more\n" + data
    assert not leftover_temp_files(tmp_path / "store")

def test_names_ls_and_json(blobctl, files):
    blobctl("put", "--name", "datasets/mnist.npz", files["medium"], check=True)
    blobctl("put", "--name", "models/m.bin", files["small"], check=True)
    listed = json.loads(blobctl("ls", "datasets/", "--json").out)
    assert listed == [{"name": "datasets/mnist.npz", "hash": sha(files["medium"].read_bytes()),
                       "size": 300_000, "stored": listed[0]["stored"]}]
    plain = blobctl("ls").text.splitlines()
    assert plain[0].split() == ["name", "size", "stored", "hash"] and len(plain) == 3
    blobctl("put", files["big"], check=True)
    objects = json.loads(blobctl("ls", "--objects", "--json").out)
    assert len(objects) == 3 and {"hash", "size", "stored", "accessed_ns"} <= set(objects[0])


def test_ls_sorts_by_whole_name(blobctl, files):
    """Files and directories of refs/ interleave: 'a.txt' < 'a/x' < 'b' < 'c/d' < 'ca'."""
    for name in ("ca", "c/d", "b", "a/x", "a.txt"):
        blobctl("put", "--name", name, files["small"], check=True)
    assert [row["name"] for row in json.loads(blobctl("ls", "--json").out)] == ["a.txt", "a/x", "b", "c/d", "ca"]


def test_stat_summary_and_keys(blobctl, files):
    blobctl("put", "--name", "a", files["medium"], check=True)
    blobctl("get", "a", check=True)
    summary = json.loads(blobctl("stat", "--json").out)
    assert summary["objects"] == 1 and summary["names"] == 1 and summary["size"] == 300_000
    assert 0 < summary["stored"] < 300_000
    assert summary["counters"]["local_hits"] == 1 and summary["counters"]["objects_written"] == 1
    keyed = json.loads(blobctl("stat", "a", "--json").out)
    assert keyed[0]["hash"] == sha(files["medium"].read_bytes()) and keyed[0]["names"] == ["a"]
    human = blobctl("stat").text
    assert "compression" in human and "local hits" in human and "\x1b[" not in human


def test_rm_name_then_object(blobctl, files):
    digest = blobctl("put", "--name", "x", files["small"], check=True).text.strip()
    assert blobctl("rm", digest).code == EXIT_USAGE  # still named
    assert blobctl("rm", "x").code == 0
    assert blobctl("rm", digest).code == 0
    assert blobctl("get", digest).code == EXIT_NOT_FOUND


def test_a_name_cannot_shadow_a_hash(blobctl, files, store_dir):
    """Otherwise `rm HASH` would remove the object with that hash, not the name. One made
    before this rule still lists and still protects its object."""
    empty = sha(b"")
    for spelling in (empty, empty.upper()):  # get takes upper-case hashes too
        refused = blobctl("put", "--name", spelling, files["small"])
        assert refused.code == EXIT_USAGE and "reads as a hash" in one_line_error(refused)
    digest = blobctl("put", files["small"], check=True).text.strip()
    (store_dir / "refs" / empty).write_text(digest + "\n")
    assert [row["name"] for row in json.loads(blobctl("ls", "--json", check=True).out)] == [empty]
    plan = json.loads(blobctl("gc", "--max-size", "0", "--grace", "0s", "--dry-run", "--json", check=True).out)
    assert plan["kept"]["named"]["objects"] == 1 and plan["evict"]["hashes"] == []


@pytest.mark.parametrize("args,code,needle", [
    (["get", "0" * 64], EXIT_NOT_FOUND, "is not in the store"),
    (["get", "nosuchname"], EXIT_NOT_FOUND, "no object or name matches"),
    (["get", "sha256:zz"], EXIT_USAGE, "invalid hash"),
    (["get", "../../etc/passwd"], EXIT_USAGE, "invalid name"),
    (["put", "/nonexistent/file"], EXIT_NOT_FOUND, "/nonexistent/file"),
    (["put", "/"], EXIT_USAGE, "is a directory"),
    (["put", "--name", "/abs", "/etc/hostname"], EXIT_USAGE, "absolute"),
    (["put"], EXIT_USAGE, "nothing to put"),
    (["get", "x", "--range", "abc"], EXIT_USAGE, "invalid range"),
    (["get", "x", "--range", "+1:1_0"], EXIT_USAGE, "invalid range"),
    (["config", "set", "max_size", "huge"], EXIT_USAGE, "invalid size"),
    (["config", "get", "nope"], EXIT_USAGE, "unknown config key"),
])
def test_bad_input_is_one_clear_line(blobctl, store_dir, args, code, needle):
    store_dir.mkdir()
    result = blobctl(*args)
    assert result.code == code and needle in one_line_error(result) and result.out == b""


def test_only_commands_that_store_make_a_store_where_no_directory_is(blobctl, tmp_path):
    """A mistyped --store (or a backup disk not mounted) must not answer as a new empty
    store: reading commands say there is none; put and pull make it; an existing empty
    directory becomes a store by any command."""
    missing = tmp_path / "typo"
    for args in (["ls"], ["stat"], ["get", "0" * 64], ["gc", "--dry-run"], ["fsck"], ["mount"], ["rm", "x"]):
        result = blobctl("--store", missing, *args)
        assert result.code == EXIT_NOT_FOUND and f"no blobctl store at {missing}" in one_line_error(result), args
        assert not missing.exists()
    assert blobctl("--store", missing, "put", "-", input=b"x").code == 0 and (missing / "FORMAT").exists()
    (tmp_path / "empty").mkdir()
    assert blobctl("--store", tmp_path / "empty", "stat").code == 0 and (tmp_path / "empty" / "FORMAT").exists()


@pytest.mark.parametrize("value,needle", [
    ("0", "0 is below the minimum, 1"),
    ("257", "257 is above the maximum, 256"),
    ("many", "'many' is not a whole number"),
])
@pytest.mark.parametrize("command", ["push", "pull"])
def test_bad_jobs_value_is_a_usage_error_naming_the_option(blobctl, command, value, needle):
    result = blobctl(command, "--jobs", value, *(["x/"] if command == "pull" else []))
    assert result.code == EXIT_USAGE and result.out == b""
    assert f"invalid value for '--jobs' / '-j': {needle} (see 'blobctl {command} -h')" in one_line_error(result)


@pytest.mark.parametrize("args,needle", [
    (["pin"], "missing argument 'KEY' (see 'blobctl pin -h')"),
    (["config", "set", "jobs"], "missing argument 'VALUE' (see 'blobctl config set -h')"),
    (["put", "--bogus"], "no such option: --bogus (see 'blobctl put -h')"),
    (["frobnicate"], "no such command 'frobnicate' (see 'blobctl -h')"),
])
def test_argument_errors_are_one_line_naming_the_help(blobctl, args, needle):
    result = blobctl(*args)
    assert result.code == EXIT_USAGE and needle in one_line_error(result) and result.out == b""


def run_with_streams(args, stdin=None, stdout=subprocess.PIPE):
    """Run blobctl with its standard streams as given (a file, or None for closed)."""
    closing = {0: stdin is None, 1: stdout is None}
    return subprocess.run(
        ["sh", "-c", '"$@"' + "".join(f" {fd}>&-" if fd else " <&-" for fd, c in closing.items() if c),
         "sh", *blobctl_executable(), *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("args,closed,code,needle", [
    (["put", "-"], "stdin", 2, "standard input is closed"),
    (["put", "--stdin-paths"], "stdin", 2, "standard input is closed"),
    (["get", "--batch"], "stdin", 2, "standard input is closed"),
    (["get", "x"], "stdout", 2, "standard output is closed"),
    (["ls"], "stdout", 2, "standard output is closed"),
    (["get", "x"], "full", 1, "cannot write standard output: no space left on device"),
    (["stat", "--json"], "full", 1, "cannot write standard output: no space left on device"),
])
def test_closed_or_full_standard_streams_are_one_line(blobctl, files, args, closed, code, needle):
    blobctl("put", "--name", "x", files["small"], check=True)
    with open("/dev/full", "wb") as full:
        result = run_with_streams(args, stdin=None if closed == "stdin" else subprocess.DEVNULL,
                                  stdout={"stdout": None, "full": full}.get(closed, subprocess.PIPE))
    err = result.stderr.decode()
    assert result.returncode == code and needle in err and len(err.splitlines()) == 1, err


def test_a_path_with_control_characters_gives_one_plain_error_line(blobctl, tmp_path):
    """Line breaks would split the message; an escape sequence or a C1 control would
    recolour the terminal or move its cursor: all are printed escaped."""
    result = blobctl("put", tmp_path / "no\nsuch\rfile\x1b[2J\x9bhere\ttab")
    assert result.code == EXIT_NOT_FOUND
    assert "no\\nsuch\\rfile\\x1b[2J\\x9bhere\ttab" in one_line_error(result)


def test_stat_json_gives_the_store_path_absolute(tmp_path):
    (tmp_path / "rel").mkdir()
    result = subprocess.run(blobctl_executable() + ["--store", "rel", "stat", "--json"], cwd=tmp_path,
                            capture_output=True, check=True)
    assert json.loads(result.stdout)["path"] == str(tmp_path / "rel")


def test_paths_spelt_like_special_arguments_are_files(blobctl, tmp_path):
    """A file named '-' listed on stdin is that file (stdin is the list); -o ./- is a file
    named '-'; -o with a trailing '/' names a directory, never a file to overwrite."""
    (tmp_path / "-").write_bytes(b"a file named dash")
    (tmp_path / "other").write_bytes(b"other")
    listed = subprocess.run(blobctl_executable() + ["put", "--stdin-paths", "-z"], input=b"-\0other\0",
                            cwd=tmp_path, capture_output=True)
    assert listed.returncode == 0
    assert listed.stdout.decode().splitlines() == [f"{sha(b'a file named dash')}  -", f"{sha(b'other')}  other"]
    blobctl("put", "--name", "n", tmp_path / "other", check=True)
    got = subprocess.run(blobctl_executable() + ["get", "n", "-o", "./-"], cwd=tmp_path, capture_output=True)
    assert got.returncode == 0 and got.stdout == b"" and (tmp_path / "-").read_bytes() == b"other"
    (tmp_path / "notes").write_bytes(b"important")
    for target in ("notes/", "new-dir/", "new-dir/.", "notes/.."):
        refused = blobctl("get", "n", "-o", f"{tmp_path}/{target}")
        assert refused.code == EXIT_USAGE and "not a directory" in refused.err
    assert (tmp_path / "notes").read_bytes() == b"important" and not (tmp_path / "new-dir").exists()


def test_file_names_that_are_not_utf8_are_printed_as_their_bytes_in_any_locale(blobctl, tmp_path):
    """Outside the C locale (en_US.UTF-8, say) Python's stdout refuses the surrogates
    such a name is read as; PYTHONIOENCODING=utf-8 sets up the same strict stream."""
    name = b"caf\xe9.txt"
    (tmp_path / os.fsdecode(name)).write_bytes(b"latin-1 name")
    env = {"PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(blobctl_executable() + ["put", "--stdin-paths"], input=b"ok\n" + name + b"\n",
                            cwd=tmp_path, capture_output=True, env={**os.environ, **env})
    assert result.returncode == EXIT_NOT_FOUND and b"Traceback" not in result.stderr  # "ok" does not exist
    assert result.stdout == sha(b"latin-1 name").encode() + b"  " + name + b"\n"
    missing = subprocess.run(blobctl_executable() + ["put", b"no-" + name], cwd=tmp_path,
                             capture_output=True, env={**os.environ, **env})
    assert missing.returncode == EXIT_NOT_FOUND and b"no-caf\\xe9.txt" in missing.stderr  # escaped, as `cat` does


def test_a_closed_stderr_drops_messages_and_keeps_data_and_exit_codes(blobctl, files):
    """With `2>&-`, errors must not land in the data on stdout, and commands must work."""
    blobctl("put", "--name", "x", files["small"], check=True)

    def run(*args, stdin=b""):
        return subprocess.run(["sh", "-c", '"$@" 2>&-', "sh", *blobctl_executable(), *args],
                              input=stdin, capture_output=True)

    got = run("get", "x")
    assert got.returncode == 0 and got.stdout == files["small"].read_bytes()
    assert run("put", files["small"]).stdout.decode().strip() == sha(files["small"].read_bytes())
    batch = run("get", "--batch", stdin=b"nope\n")
    assert batch.returncode == EXIT_NOT_FOUND and batch.stdout == b"nope missing\n"
    removed = run("rm", "nope")
    assert removed.returncode == EXIT_NOT_FOUND and removed.stdout == b""


@pytest.fixture
def shared_dir(tmp_path):
    """A directory an unprivileged user can traverse (pytest's tmp_path is root-only)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="blobctl-shared-"))
    path.chmod(0o777)
    yield path
    subprocess.run(["rm", "-rf", str(path)])


def as_nobody(*args, **kwargs):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *blobctl_executable(), *args], capture_output=True,
                          env={**os.environ, "BLOBCTL_CONFIG": "/nonexistent"}, **kwargs)


def test_unreadable_file(shared_dir):
    secret = shared_dir / "secret"
    secret.write_text("x")
    secret.chmod(0)
    (shared_dir / "s").mkdir()
    (shared_dir / "s").chmod(0o777)
    result = as_nobody("--store", shared_dir / "s", "put", secret)
    err = result.stderr.decode()
    assert result.returncode == 1 and f"cannot read {secret}: permission denied" in err and "Traceback" not in err


def test_get_o_into_a_directory_it_cannot_write_says_why(shared_dir):
    """-o renames a temp file over FILE: a writable file in a read-only directory fails,
    and the message says what to do instead."""
    store, locked, source = shared_dir / "s", shared_dir / "locked", shared_dir / "source"
    store.mkdir()
    store.chmod(0o777)
    source.write_bytes(b"data")
    locked.mkdir()
    (locked / "out").write_bytes(b"old")
    (locked / "out").chmod(0o666)
    digest = as_nobody("--store", store, "put", source, check=True).stdout.decode().strip()
    result = as_nobody("--store", store, "get", digest, "-o", locked / "out")
    err = result.stderr.decode()
    assert result.returncode == 1 and "must be writable; '> FILE' writes in place" in err
    assert (locked / "out").read_bytes() == b"old"


def test_ambiguous_prefix_lists_candidates(blobctl, tmp_path):
    by_prefix = {}
    i = 0
    while True:
        data = str(i).encode()
        digest = sha(data)
        by_prefix.setdefault(digest[:4], []).append(data)
        if len(by_prefix[digest[:4]]) == 2:
            break
        i += 1
    pair = by_prefix[digest[:4]]
    for data in pair:
        blobctl("put", "-", input=data, check=True)
    result = blobctl("get", digest[:4])
    line = one_line_error(result)
    assert result.code == EXIT_USAGE and "ambiguous" in line
    assert all(sha(d)[:12] in line for d in pair)


def test_corrupt_object_fails_naming_key_and_leaves_no_output_file(blobctl, store_dir, files, tmp_path):
    digest = blobctl("put", "--name", "precious", files["big"], check=True).text.strip()
    path = store_dir / "objects" / digest[:2] / digest[2:]
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x55
    path.write_bytes(bytes(data))
    out = tmp_path / "restored"
    result = blobctl("get", "precious", "-o", out)
    assert result.code == EXIT_INTEGRITY and "precious" in one_line_error(result)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_store_not_writable(blobctl, shared_dir):
    """Another user's store: this user can look (the index is opened read-only) but not
    change it, and is told so in one line."""
    blobctl("--store", shared_dir / "s", "put", "--name", "theirs", "-", input=b"shared", check=True)
    result = as_nobody("--store", shared_dir / "s", "put", "-", input=b"data")
    err = result.stderr.decode()
    assert result.returncode == 1 and "permission denied" in err and "Traceback" not in err
    listed = as_nobody("--store", shared_dir / "s", "ls", "--json")
    assert listed.returncode == 0 and [row["name"] for row in json.loads(listed.stdout)] == ["theirs"]
    got = as_nobody("--store", shared_dir / "s", "get", "theirs")
    assert got.returncode == 0 and got.stdout == b"shared"


def test_disk_full_leaves_nothing_partial(tmp_path, files):
    """A real 2 MiB file system: a put that does not fit fails cleanly, earlier data stays."""
    with mounted("-t", "tmpfs", "-o", "size=2m", "tmpfs", at=tmp_path / "tiny") as mountpoint:
        store = mountpoint / "store"
        run = lambda *a, **k: subprocess.run(blobctl_executable() + ["--store", str(store), *a],  # noqa: E731
                                             capture_output=True, **k)
        assert run("put", "--name", "kept", files["small"]).returncode == 0
        noise = os.urandom(3 << 20)
        result = run("put", "-", input=noise)
        err = result.stderr.decode()
        assert result.returncode == 1 and "no space left on device" in err and "Traceback" not in err
        assert not leftover_temp_files(store)
        assert run("get", "kept").stdout == files["small"].read_bytes()
        assert run("get", sha(noise)).returncode == EXIT_NOT_FOUND


def test_a_store_on_a_read_only_file_system_can_be_read(tmp_path, files):
    """Commands that only look work (the index is opened read-only); a get skips its
    statistics quietly (it printed the data and then failed with exit 1, and later
    warned on every read); what would change the store fails with one line naming the
    real cause."""
    source, view = tmp_path / "store", tmp_path / "read-only"
    subprocess.run(blobctl_executable() + ["--store", str(source), "put", "--name", "n", files["small"]],
                   check=True, capture_output=True)

    def run(*args):
        return subprocess.run(blobctl_executable() + ["--store", str(view), *map(str, args)], capture_output=True)

    digest = sha(files["small"].read_bytes())
    (source / "tmp" / "journal").mkdir(exist_ok=True)  # left by a command killed mid-transaction
    (source / "tmp" / "journal" / "left.journal").write_text(f"o {digest}\n")
    with read_only_view(source, view):
        got = run("get", "n")
        assert got.returncode == 0 and got.stdout == files["small"].read_bytes()
        assert got.stderr == b""
        listed = run("ls", "--json")
        assert listed.returncode == 0 and [row["name"] for row in json.loads(listed.stdout)] == ["n"]
        summary = run("stat", "--json")
        assert summary.returncode == 0 and json.loads(summary.stdout)["objects"] == 1
        checked = run("fsck", "--json")
        assert checked.returncode == 0 and json.loads(checked.stdout)["clean"]
        new_file = tmp_path / "new"
        new_file.write_bytes(b"not stored yet")
        for args, cause in [(["put", new_file], "cannot write to store"), (["put", files["small"]], "cannot write the index"),
                            (["rm", "n"], "cannot write the index")]:
            result = run(*args)
            err = result.stderr.decode()
            assert result.returncode == 1 and cause in err and "read-only" in err and "Traceback" not in err
            assert str(new_file) not in err  # the store is what failed, not the file put
        assert run("get", digest).returncode == 0


def test_a_read_only_index_with_changes_left_in_its_wal_is_not_read_stale(tmp_path, files):
    """A writer that died left committed changes in index.sqlite-wal, and the -shm file
    is gone (copied without it, say): read-only, SQLite could only read the main file
    and miss them, so listing refuses with one line; a get still serves the data."""
    source, view = tmp_path / "store", tmp_path / "read-only"
    subprocess.run(blobctl_executable() + ["--store", str(source), "put", "--name", "n", files["small"]],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "import os, sqlite3, sys\n"
                    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                    "db.execute('PRAGMA wal_autocheckpoint = 0')\n"
                    "db.execute(\"INSERT OR REPLACE INTO counters VALUES ('x', 1)\")\n"
                    "os._exit(0)", str(source / "index.sqlite")], check=True)
    assert (source / "index.sqlite-wal").stat().st_size > 0
    (source / "index.sqlite-shm").unlink()
    with read_only_view(source, view):
        listed = subprocess.run(blobctl_executable() + ["--store", str(view), "ls"], capture_output=True)
        assert listed.returncode == 1 and listed.stdout == b""
        assert "index.sqlite-wal holds changes only a writer can apply" in one_line_error(
            Result(listed.returncode, listed.stdout, listed.stderr.decode()))
        got = subprocess.run(blobctl_executable() + ["--store", str(view), "get", "n"], capture_output=True)
        assert got.returncode == 0 and got.stdout == files["small"].read_bytes()


def test_an_index_this_user_cannot_read_is_one_line_and_get_still_works(shared_dir):
    """Another user's store whose index file is private: listing fails with one line
    saying what is missing; get needs only the objects and refs."""
    store = shared_dir / "s"
    subprocess.run(blobctl_executable() + ["--store", str(store), "put", "--name", "theirs", "-"],
                   input=b"shared", check=True, capture_output=True)
    (store / "index.sqlite").chmod(0o600)
    listed = as_nobody("--store", store, "ls")
    err = listed.stderr.decode()
    assert listed.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot read the index" in err and "needs read access" in err
    got = as_nobody("--store", store, "get", "theirs")
    assert got.returncode == 0 and got.stdout == b"shared" and "Traceback" not in got.stderr.decode()


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupted_put_cleans_temp_files(store_dir, tmp_path, signum, code):
    """Ctrl-C or SIGTERM in the middle of a put from a slow pipe: exit 130 or 143 and no
    temp file left."""
    env = {**os.environ, "BLOBCTL_STORE": str(store_dir)}
    proc = subprocess.Popen(blobctl_executable() + ["put", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdin.write(os.urandom(1 << 20))
    proc.stdin.flush()
    deadline = time.time() + 20
    while time.time() < deadline and not any((store_dir / "tmp").glob("*.partial")):
        time.sleep(0.02)
    assert any((store_dir / "tmp").glob("*.partial")), "put never started writing"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code and b"Traceback" not in err
    assert not leftover_temp_files(store_dir)
    assert not any((store_dir / "objects").rglob("*/*"))


def test_stdin_paths_and_nul_separated(blobctl, files):
    listing = "\n".join(str(p) for p in files.values()) + "\n"
    out = blobctl("put", "--stdin-paths", input=listing.encode(), check=True).text.splitlines()
    assert [line.split("  ")[1] for line in out] == [str(p) for p in files.values()]
    zero = "\0".join(str(p) for p in files.values()).encode()
    assert blobctl("put", "--stdin-paths", "-z", input=zero, check=True).text.splitlines() == out
    bad = blobctl("put", "--stdin-paths", input=f"{files['small']}\n/missing/one\n".encode())
    assert bad.code == EXIT_NOT_FOUND and bad.text.count("\n") == 1 and "/missing/one" in bad.err


def tiny_files(tmp_path: Path, count: int) -> list[Path]:
    """`count` distinct files of a few bytes, 1,000 per directory."""
    paths = []
    for i in range(count):
        path = tmp_path / f"{i // 1000}" / f"f{i}"
        if i % 1000 == 0:
            path.parent.mkdir()
        path.write_bytes(b"file %d\n" % i)
        paths.append(path)
    return paths


@pytest.mark.parametrize("how", ["script", "module"])
def test_stdin_paths_of_many_small_files(store_dir, tmp_path, how):
    """Enough files for worker processes (started by the installed script, or by
    `python -m blobctl`): sha256sum-style lines in input order, one error line for a
    missing file, exit 3, nothing left in tmp/."""
    from blobctl.store import PROCESSES_MIN_FILES

    paths = tiny_files(tmp_path, PROCESSES_MIN_FILES + 600)
    listing = [str(p) for p in paths]
    listing.insert(PROCESSES_MIN_FILES + 300, "/missing/one")
    command = blobctl_executable() if how == "script" else [sys.executable, "-m", "blobctl"]
    proc = subprocess.run(command + ["put", "--stdin-paths"], input="\n".join(listing).encode(),
                          capture_output=True, timeout=120, env={**os.environ, "BLOBCTL_STORE": str(store_dir)})
    assert proc.returncode == EXIT_NOT_FOUND, proc.stderr.decode()
    assert proc.stderr.decode().count("\n") == 1 and "/missing/one" in proc.stderr.decode()
    expected = [f"{sha(p.read_bytes())}  {p}" for p in paths]
    assert proc.stdout.decode().splitlines() == expected
    assert not leftover_temp_files(store_dir)


def test_putting_many_stored_files_again_reuses_their_objects(store_dir, tmp_path):
    """A put finds stored objects, in this process or in its workers (here, new files
    come first, so the stored ones reach the workers), and writes only what is new."""
    from blobctl.store import PROCESSES_MIN_FILES

    (tmp_path / "stored").mkdir()
    stored = tiny_files(tmp_path / "stored", 1500)
    new = [tmp_path / f"new{i}" for i in range(PROCESSES_MIN_FILES + 100)]
    for i, path in enumerate(new):
        path.write_bytes(b"new file %d\n" % i)

    def put_all(paths: list[Path]) -> list[dict]:
        proc = subprocess.run(blobctl_executable() + ["put", "--stdin-paths", "--json"],
                              input="\n".join(map(str, paths)).encode(), capture_output=True, timeout=120,
                              env={**os.environ, "BLOBCTL_STORE": str(store_dir)})
        assert proc.returncode == 0, proc.stderr.decode()
        return json.loads(proc.stdout)

    def object_files() -> list[Path]:
        return sorted(p for p in (store_dir / "objects").rglob("*") if p.is_file())

    first = put_all(stored)
    stored[-7].write_bytes(b"changed since")
    objects_before = object_files()
    second = put_all(new + stored)

    assert all(row["created"] for row in first)
    assert [row["created"] for row in second] == [True] * len(new) + [p == stored[-7] for p in stored]
    again = second[len(new):]
    assert [(r["hash"], r["stored"]) for r in again[:-7]] == [(r["hash"], r["stored"]) for r in first[:-7]]
    assert again[-7]["hash"] == sha(b"changed since")
    assert len(object_files()) == len(objects_before) + len(new) + 1
    assert not leftover_temp_files(store_dir)


def slow_put_of_many_files(store_dir: Path, tmp_path: Path, count: int = 6000) -> tuple[subprocess.Popen, list[str]]:
    """`put --stdin-paths` of `count` tiny files in its own process group, with ~1.2 s of
    pauses before publishing (so a test can act mid-way); returns it and the paths."""
    paths = [str(path) for path in tiny_files(tmp_path, count)]
    proc = subprocess.Popen(blobctl_executable() + ["put", "--stdin-paths"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "BLOBCTL_STORE": str(store_dir), "BLOBCTL_TEST_DELAY_PUBLISH": "0.05"})
    proc.stdin.write("\n".join(paths).encode())
    proc.stdin.close()
    return proc, paths


@pytest.mark.parametrize("signum,whom,code", [(signal.SIGINT, "group", 130), (signal.SIGTERM, "group", 143),
                                              (signal.SIGTERM, "parent", 143)],
                         ids=["ctrl-c", "sigterm-to-the-job", "sigterm-like-timeout"])
def test_interrupting_a_put_of_many_files_leaves_no_temp_files(store_dir, tmp_path, signum, whom, code):
    """Ctrl-C reaches the whole process group, worker processes included; SIGTERM comes
    to the job or, from `timeout`, to blobctl alone: exit 130 or 143, nothing on stderr,
    nothing in tmp/, no worker left running, and every object already reported is in
    the store."""
    proc, _ = slow_put_of_many_files(store_dir, tmp_path)
    reported = [proc.stdout.readline() for _ in range(1500)]  # past the inline start
    workers = worker_processes(proc.pid)
    assert workers
    os.killpg(proc.pid, signum) if whom == "group" else proc.send_signal(signum)
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == code and not err, err.decode()
    assert not leftover_temp_files(store_dir)
    assert not [pid for pid in workers if alive(pid)]
    for line in reported + rest.splitlines()[:50]:
        digest = line.split()[0].decode()
        assert (store_dir / "objects" / digest[:2] / digest[2:]).is_file()


@pytest.mark.parametrize("endless", ["/dev/zero", "fifo"])
def test_ctrl_c_stops_a_put_whose_worker_reads_an_endless_input(store_dir, tmp_path, endless):
    """A worker reading /dev/zero, or a FIFO nobody writes to, never finishes its file:
    Ctrl-C once waited for it forever. Now: exit 130 at once, nothing left in tmp/, no
    worker left running."""
    from blobctl.store import PROCESSES_MIN_FILES

    paths = [str(path) for path in tiny_files(tmp_path, PROCESSES_MIN_FILES + 100)]
    if endless == "fifo":
        endless = str(tmp_path / "fifo")
        os.mkfifo(endless)
    proc = subprocess.Popen(blobctl_executable() + ["put", "--stdin-paths"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "BLOBCTL_STORE": str(store_dir)})
    proc.stdin.write("\n".join(paths + [endless]).encode() + b"\n")
    proc.stdin.close()
    assert all(proc.stdout.readline() for _ in range(512))  # what comes before the endless input's batch
    workers = worker_processes(proc.pid)
    time.sleep(0.5)  # a worker is now inside the endless input
    os.killpg(proc.pid, signal.SIGINT)
    proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 130 and b"Traceback" not in err, err
    assert not leftover_temp_files(store_dir)
    deadline = time.time() + 10
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


def test_gc_leaves_the_temp_files_of_a_put_still_running_however_old(store_dir, tmp_path):
    """A put's file may wait long behind a slow input (here a FIFO fed late), or be
    written for long: gc took such files for a killed command's leftovers once they
    were 15 minutes old, and the put then failed or hung. A running put's temp files
    are in a directory it holds locked; gc removes only those of dead commands."""
    from blobctl.store import PROCESSES_MIN_FILES

    paths = [str(path) for path in tiny_files(tmp_path, PROCESSES_MIN_FILES + 300)]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "BLOBCTL_STORE": str(store_dir)}
    proc = subprocess.Popen(blobctl_executable() + ["put", "--stdin-paths"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdin.write("\n".join(paths[:PROCESSES_MIN_FILES + 100] + [str(fifo)] + paths[PROCESSES_MIN_FILES + 100:])
                     .encode() + b"\n")
    proc.stdin.close()
    out = []  # read meanwhile: a full pipe would stop the put before it reaches the FIFO
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
    reader.start()
    with open(fifo, "wb") as feeder:  # the worker with the FIFO has started reading it
        feeder.write(b"first part, ")
        deadline = time.time() + 30
        while len([p for p in (store_dir / "tmp").rglob("*.partial") if p.is_file()]) < 100:
            assert time.time() < deadline, "the put wrote no temp files"
            time.sleep(0.05)
        two_hours_ago = time.time() - 7200
        for path in (store_dir / "tmp").rglob("*"):
            os.utime(path, (two_hours_ago, two_hours_ago))
        assert subprocess.run(blobctl_executable() + ["gc", "--grace", "0"], env=env).returncode == 0
        feeder.write(b"then the rest")
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err.decode()
    reader.join()
    lines = out[0].decode().splitlines()
    assert lines[PROCESSES_MIN_FILES + 100] == f"{sha(b'first part, then the rest')}  {fifo}"
    assert len(lines) == len(paths) + 1 and not leftover_temp_files(store_dir)
    assert subprocess.run(blobctl_executable() + ["fsck"], env=env, capture_output=True).returncode == 0


def test_a_nul_byte_in_a_list_of_paths_is_that_path_s_error(blobctl, tmp_path):
    (tmp_path / "f1").write_bytes(b"one")
    (tmp_path / "f2").write_bytes(b"two")
    result = subprocess.run(blobctl_executable() + ["put", "--stdin-paths"], cwd=tmp_path, capture_output=True,
                            input=b"f1\na\0b\nf2\n")
    assert result.returncode == EXIT_USAGE and b"Traceback" not in result.stderr
    assert result.stdout.decode().splitlines() == [f"{sha(b'one')}  f1", f"{sha(b'two')}  f2"]
    assert b"a\\x00b: a path cannot hold a NUL byte" in result.stderr


def test_workers_of_a_killed_put_stop(store_dir, tmp_path):
    """kill -9 of blobctl itself: its worker processes notice and end within a second or
    two instead of waiting for tasks forever."""
    proc, _ = slow_put_of_many_files(store_dir, tmp_path)
    for _ in range(1300):
        proc.stdout.readline()
    workers = worker_processes(proc.pid)
    assert workers
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.time() + 10
    running = workers
    while running and time.time() < deadline:
        time.sleep(0.1)
        running = [pid for pid in workers if alive(pid)]
    assert not running, f"worker processes {running} outlived their put"


def test_a_killed_worker_process_loses_nothing(store_dir, tmp_path):
    """A worker killed mid-put (say, by the OOM killer): the put finishes the rest itself,
    with every line right and every object stored."""
    proc, paths = slow_put_of_many_files(store_dir, tmp_path)
    first = [proc.stdout.readline() for _ in range(1300)]  # workers are busy by now
    workers = worker_processes(proc.pid)
    assert workers, "no worker process to kill"
    os.kill(workers[0], signal.SIGKILL)
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 0 and not err, err.decode()
    lines = [line.decode() for line in first] + rest.decode().splitlines(keepends=True)
    assert lines == [f"{sha(Path(p).read_bytes())}  {p}\n" for p in paths]
    for line in lines[::97]:
        digest = line.split()[0]
        assert (store_dir / "objects" / digest[:2] / digest[2:]).read_bytes()
    assert not leftover_temp_files(store_dir)


#: Run in a put's parent before its workers fork: the first worker to send the pool a
#: message longer than one atomic pipe write (PIPE_BUF) sends half of it and is killed,
#: as the OOM killer could between two writes.
_KILL_MID_MESSAGE = """
import os, select, signal, sys
from multiprocessing import connection
parent, send = os.getpid(), connection.Connection._send
def half_then_die(self, buf, *args):
    if os.getpid() != parent and len(buf) > select.PIPE_BUF:
        send(self, buf[:len(buf) // 2], *args)
        os.kill(os.getpid(), signal.SIGKILL)
    return send(self, buf, *args)
connection.Connection._send = half_then_die
from blobctl.__main__ import main
sys.argv[0] = "blobctl"
main()
"""


def test_a_worker_killed_while_sending_to_the_pool_does_not_hang_the_put(store_dir, tmp_path):
    """A chunk's outcomes once went through the pool's pipe: a worker killed half-way
    through writing them left the pool reading the rest forever (a put that never ended)."""
    paths = [str(path) for path in tiny_files(tmp_path, 2000)]
    result = subprocess.run([sys.executable, "-c", _KILL_MID_MESSAGE, "put", "--stdin-paths"],
                            input="\n".join(paths).encode(), capture_output=True, timeout=120,
                            env={**os.environ, "BLOBCTL_STORE": str(store_dir)})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [f"{sha(Path(p).read_bytes())}  {p}" for p in paths]
    assert not leftover_temp_files(store_dir)


def test_put_json(blobctl, files):
    rows = json.loads(blobctl("put", "--json", "--name", "n", files["medium"], check=True).out)
    assert rows == [{"hash": sha(files["medium"].read_bytes()), "size": 300_000, "stored": rows[0]["stored"],
                     "source": str(files["medium"]), "created": True, "name": "n"}]
    again = json.loads(blobctl("put", "--json", files["medium"], check=True).out)
    assert again[0]["created"] is False


def test_concurrent_processes_put_same_and_different_files(store_dir, tmp_path):
    """Six processes at once, half of the inputs shared: all succeed, every object intact."""
    shared = [tmp_path / f"shared{i}" for i in range(20)]
    for i, path in enumerate(shared):
        path.write_bytes(os.urandom(1000 + i * 5000))
    procs, own_files = [], []
    for worker in range(6):
        own = [tmp_path / f"own{worker}-{i}" for i in range(20)]
        for path in own:
            path.write_bytes(os.urandom(3000))
        own_files += own
        listing = "\n".join(map(str, shared + own)).encode()
        proc = subprocess.Popen(blobctl_executable() + ["put", "--stdin-paths"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "BLOBCTL_STORE": str(store_dir)})
        procs.append((proc, listing))
    for proc, listing in procs:
        out, err = proc.communicate(listing, timeout=120)
        assert proc.returncode == 0, err
    summary = json.loads(subprocess.run(blobctl_executable() + ["--store", str(store_dir), "stat", "--json"],
                                        capture_output=True, check=True).stdout)
    assert summary["objects"] == len(shared) + len(own_files)
    for path in shared + own_files:
        got = subprocess.run(blobctl_executable() + ["--store", str(store_dir), "get", sha(path.read_bytes())],
                             capture_output=True)
        assert got.stdout == path.read_bytes()
    assert not leftover_temp_files(store_dir)


def test_config_commands(blobctl, store_dir, tmp_path):
    assert blobctl("config", "set", "max_size", "5 GB").code == 0
    assert blobctl("config", "get", "max_size").text.strip() == "5 GB"
    for key, shown in (("remote_timeout", "30s"), ("gc_grace", "1h")):  # read back as typed
        assert blobctl("config", "get", key).text.strip() == shown
        blobctl("config", "set", key, shown, check=True)
    blobctl("config", "set", "--user", "compression_level", "6", check=True)
    rows = {r["key"]: r for r in json.loads(blobctl("config", "list", "--json").out)}
    assert rows["compression_level"]["origin"] == str(tmp_path / "user-config.toml")
    assert rows["max_size"]["origin"] == str(store_dir / "config.toml")
    listing = blobctl("config", "list", "--show-origin").text
    assert "env:BLOBCTL_STORE" in listing
    flagged = {row["key"]: row for row in json.loads(blobctl("--store", tmp_path / "other", "config", "list",
                                                             "--json", check=True).out)}
    assert flagged["store"] == {"key": "store", "value": str(tmp_path / "other"), "origin": "--store"}
    assert blobctl("config", "path").text.strip() == str(store_dir / "config.toml")
    blobctl("config", "set", "s3.secret_access_key", "supersecretvalue1234", check=True)
    assert "supersecret" not in blobctl("config", "list").text
    assert "supersecret" not in blobctl("config", "get", "s3.secret_access_key").text
    assert blobctl("config", "unset", "max_size").code == 0
    (store_dir / "config.toml").write_text("max_size = [broken\n")
    result = blobctl("stat")
    assert result.code == EXIT_USAGE and f"{store_dir / 'config.toml'}: malformed TOML" in one_line_error(result)


def test_config_writes_keep_every_concurrent_change_and_the_files_permissions(blobctl, store_dir, tmp_path):
    """Six `config set`s and a `mount` at once: every one is kept (each once rewrote the
    file it had read at start-up). A new config file is private (it may hold secrets),
    an existing one keeps its mode, and a symlinked one is written where it points."""
    settings = [("jobs", "2"), ("compression_level", "5"), ("max_size", "1 GB"), ("gc_grace", "2h"),
                ("remote_retries", "5"), ("auto_gc", "false")]
    env = {**os.environ, "BLOBCTL_STORE": str(store_dir)}
    procs = [subprocess.Popen(blobctl_executable() + ["config", "set", key, value], env=env,
                              stderr=subprocess.PIPE) for key, value in settings]
    procs.append(subprocess.Popen(blobctl_executable() + ["mount", "team", str(tmp_path / "remote")], env=env,
                                  stderr=subprocess.PIPE))
    assert [proc.wait(timeout=60) for proc in procs] == [0] * 7
    for key, value in settings:
        assert blobctl("config", "get", key, check=True).text.strip() == {"max_size": "1 GB"}.get(key, value)
    assert json.loads(blobctl("mount", "--json", check=True).out)[0]["prefix"] == "team/"
    assert stat.S_IMODE((store_dir / "config.toml").stat().st_mode) == 0o600
    (store_dir / "config.toml").chmod(0o640)
    blobctl("config", "set", "jobs", "3", check=True)
    assert stat.S_IMODE((store_dir / "config.toml").stat().st_mode) == 0o640
    dotfiles = tmp_path / "dotfiles" / "blobctl.toml"
    dotfiles.parent.mkdir()
    dotfiles.write_text("jobs = 4\n")
    (tmp_path / "user-config.toml").symlink_to(dotfiles)
    blobctl("config", "set", "--user", "compression_level", "6", check=True)
    assert (tmp_path / "user-config.toml").is_symlink()
    assert dotfiles.read_text() == "compression_level = 6\njobs = 4\n"


def test_config_set_and_mount_never_write_into_a_directory_that_is_not_a_store(blobctl, tmp_path):
    """`config set` wrote config.toml into a project directory that `put` then refused as
    not a store; both now refuse it alike, and a new or empty directory still works."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    for args in (["config", "set", "max_size", "1G"], ["mount", "team", str(tmp_path / "remote")],
                 ["put", "-"]):
        result = blobctl("--store", project, *args, input=b"x")
        assert result.code == EXIT_USAGE and "is not empty and not a blobctl store" in one_line_error(result), args
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert blobctl("--store", tmp_path / "new", "config", "set", "max_size", "1G").code == 0
    assert blobctl("--store", tmp_path / "new", "put", "-", input=b"x").code == 0


def test_a_bad_value_in_a_config_file_can_be_mended_with_config_commands(blobctl, store_dir):
    """A value a later version refuses (or a typo) made every command fail, config set
    and unset included; they now edit the file, and other commands still name the line.
    A BOM (Notepad) is not malformed TOML; rewriting a commented file says it drops them."""
    store_dir.mkdir()
    (store_dir / "config.toml").write_text("\ufeff# tuned by hand\njobs = 0\n", encoding="utf-8")
    refused = blobctl("config", "get", "jobs")
    assert refused.code == EXIT_USAGE and f"{store_dir / 'config.toml'}:2: jobs" in one_line_error(refused)
    assert blobctl("config", "path", check=True).text.strip() == str(store_dir / "config.toml")
    mended = blobctl("config", "set", "jobs", "4", check=True)
    assert "without its comments" in mended.err
    assert blobctl("config", "get", "jobs", check=True).text.strip() == "4"
    (store_dir / "config.toml").write_text("jobs = 0\n")
    blobctl("config", "unset", "jobs", check=True)
    assert blobctl("config", "get", "jobs", check=True).text.strip() == "8"


def test_messages_on_stderr_data_on_stdout(blobctl, files):
    result = blobctl("rm", "nothing-here")
    assert result.out == b"" and result.err
    put = blobctl("put", files["small"])
    assert put.err == "" and len(put.text.split()) == 1


def test_broken_pipe_is_quiet(files, tmp_path):
    big = tmp_path / "huge"
    big.write_bytes(os.urandom(40 << 20))
    result = shell(f"blobctl put --name h {big} >/dev/null && blobctl get h | head -c 10 | wc -c")
    assert result.stdout.strip() == b"10" and b"Traceback" not in result.stderr


def test_python_dash_m(store_dir):
    result = subprocess.run([sys.executable, "-m", "blobctl", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("blobctl ")


@pytest.mark.parametrize("command", ["put", "get", "gc"])
def test_progress_bars_only_on_a_terminal(tmp_path, store_dir, command):
    """Long operations draw a bar on stderr when it is a terminal (here a pty made by
    `script`), and write nothing to a stderr that is a pipe."""
    if shutil.which("script") is None:
        pytest.skip("util-linux 'script' is not installed")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(48 << 20))
    exe = blobctl_executable()[0]
    digest = subprocess.run([exe, "put", str(big)], capture_output=True, check=True).stdout.decode().strip()
    args = {"put": ["put", str(big)], "get": ["get", digest, "-o", str(tmp_path / "out")],
            "gc": ["gc", "--max-size", "0", "--grace", "0"]}[command]
    line = " ".join([exe, "--store", str(store_dir), *args])
    on_tty = subprocess.run(["script", "-qfec", line, "/dev/null"], capture_output=True,
                            env={**os.environ, "COLUMNS": "80"})
    assert on_tty.returncode == 0
    assert f"{command} ".encode() in on_tty.stdout and b"\x1b[?25l" in on_tty.stdout  # a drawn bar
    piped = subprocess.run([exe, "--store", str(store_dir), *args], capture_output=True)
    assert piped.returncode == 0 and b"\x1b[" not in piped.stderr
    assert piped.stderr == b"" or command == "gc"  # gc's one-line summary is a message


def test_a_read_error_on_an_input_names_that_input(blobctl, store_dir):
    """Reading /proc/self/mem from offset 0 fails with EIO: the error is about the input
    file, not the store, and no temp file is left behind."""
    result = blobctl("put", "/proc/self/mem")
    assert result.code == 1 and "cannot read /proc/self/mem" in one_line_error(result)
    assert not leftover_temp_files(store_dir)


def test_a_repeated_sigterm_waits_for_the_clean_up(monkeypatch):
    """GNU timeout sends SIGTERM to the command and then to its process group: the
    second, arriving during the clean-up the first started, must not end the process
    (that left temp files behind in ~40% of `timeout` runs); a later one does."""
    from blobctl import cli

    killed = []
    monkeypatch.setattr(cli, "_terminated", [])
    monkeypatch.setattr(cli.os, "kill", lambda pid, signum: killed.append(signum))
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)
    with pytest.raises(cli._Terminated):
        cli._on_sigterm(signal.SIGTERM, None)
    cli._on_sigterm(signal.SIGTERM, None)  # the process group's copy: ignored
    assert killed == []
    cli._terminated[0] -= cli.SIGTERM_REPEAT_SECONDS + 1  # a user insisting later
    cli._on_sigterm(signal.SIGTERM, None)
    assert killed == [signal.SIGTERM]


def test_options_that_would_be_ignored_are_refused(blobctl, files):
    """An option that cannot apply is an error, not silently dropped."""
    blobctl("put", "--name", "x", files["small"], check=True)
    assert blobctl("put", "-z", files["small"]).code == EXIT_USAGE
    assert blobctl("stat", "--zero", "x").code == EXIT_USAGE
    assert blobctl("ls", "--objects", "not-hex").code == EXIT_USAGE
    digest = sha(files["small"].read_bytes())
    blobctl("put", files["medium"], check=True)
    for prefix in (digest[:6], digest[:6].upper(), digest[:1]):
        listed = json.loads(blobctl("ls", "--objects", prefix, "--json", check=True).out)
        assert digest in [row["hash"] for row in listed] and all(row["hash"].startswith(prefix.lower())
                                                                for row in listed)
    assert len(json.loads(blobctl("ls", "--objects", digest[:6], "--json", check=True).out)) == 1
    zeroed = json.loads(blobctl("stat", "--zero", "--json", check=True).out)
    assert zeroed["objects"] == 2 and set(zeroed["counters"].values()) == {0}


def test_rm_of_a_pinned_object_needs_force_and_takes_the_pin(blobctl, files, store_dir):
    digest = blobctl("put", files["small"], check=True).text.strip()
    blobctl("pin", digest, check=True)
    refused = blobctl("rm", digest)
    assert refused.code == EXIT_USAGE and "is pinned" in refused.err
    blobctl("rm", "--force", digest, check=True)
    assert not (store_dir / "pins" / digest).exists()
