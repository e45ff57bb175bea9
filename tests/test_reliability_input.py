"""Hostile keys, names, refs and configs (scenarios 9 and 15), and fuzzing of every parser
of untrusted input: whatever arrives, blobctl answers with one of its own errors, never a
traceback, and never touches a file outside the store."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blobctl import codec, keys, packed_refs
from blobctl.backends import Backend, check_url, url_scheme
from blobctl.config import Config, ConfigFile
from blobctl.errors import BlobctlError, ConfigError, IntegrityError, NotFoundError, UsageError
from blobctl.store import Store
from tests.reliability import report, run_in, sha

#: Keys built from the classic ways out of a directory.
HOSTILE_KEYS = [
    "../outside", "../../outside", "a/../../outside", "/etc/passwd", "..", ".", "./x", "a//b",
    "%2e%2e/outside", "%2e%2e%2foutside", "..%2foutside", "a/%2e%2e/%2e%2e/outside", "~/x",
    "\\..\\outside", "x" * 1025, "a/" + "b" * 256, "-rf", " ../outside", "sha256:../../outside",
    "sha256:" + "A" * 64, "A" * 64, "g" * 64, "0" * 65, "ABCD", "..\n", "a\tb", "ü/x",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE_KEYS), st.text(max_size=80),
                         st.lists(st.sampled_from(["..", ".", "", "a", "%2e", "/", "\0", "\\"]),
                                  max_size=8).map("/".join))

# -- watching every file access ------------------------------------------------------------
#: Audit events that touch a file, and how many of their arguments are paths.
_FILE_EVENTS = {"open": 1, "os.listdir": 1, "os.scandir": 1, "os.mkdir": 1, "os.rename": 2,
                "os.replace": 2, "os.remove": 1, "os.rmdir": 1, "os.symlink": 2, "os.link": 2,
                "os.truncate": 1, "os.chmod": 1}
#: Code and libraries that blobctl may import lazily while it runs.
_CODE_ROOTS = [Path(p).absolute() for p in {sys.prefix, sys.base_prefix, keys.__file__.rsplit("/", 2)[0]}]
_watch = threading.local()


def _audit(event: str, args: tuple) -> None:
    roots = getattr(_watch, "roots", None)
    if roots is None or event not in _FILE_EVENTS:
        return
    for arg in args[:_FILE_EVENTS[event]]:
        if isinstance(arg, (str, bytes, Path)) and arg not in ("", b""):
            path = Path(arg.decode(errors="replace") if isinstance(arg, bytes) else arg).absolute()
            if not any(path == root or root in path.parents for root in roots):
                _watch.escapes.append((event, str(path)))


sys.addaudithook(_audit)


@contextmanager
def file_access_confined_to(*roots: Path):
    """Collect every file event of this thread outside `roots` (audit hooks see open, mkdir,
    rename, remove, listdir...); the test asserts the list stays empty."""
    _watch.roots, _watch.escapes = [r.absolute() for r in roots] + _CODE_ROOTS, []
    try:
        yield _watch.escapes
    finally:
        _watch.roots = None


def store_ops(store: Store, key: str) -> None:
    """Every store entry point a key or name from a user reaches, each allowed to fail with
    one of blobctl's errors."""
    digest = sha(b"x")
    for operation in (lambda: store.resolve(key), lambda: store.bind(key, digest),
                      lambda: store.read_ref(key), lambda: store.remove(key),
                      lambda: store.info(key), lambda: store.list_names(key)):
        try:
            operation()
        except BlobctlError:
            pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=hostile_text)
def test_hostile_keys_never_leave_the_store(store, key):
    with file_access_confined_to(store.root) as escapes:
        store_ops(store, key)
    assert escapes == []


def test_hostile_keys_on_the_command_line(blobctl, tmp_path):
    """Through the real CLI: a key that is not a valid name or hash fails with a usage or
    not-found error (one line, no traceback) and the files beside the store, which the
    keys aim at, are neither read into the output nor changed."""
    outside = tmp_path / "outside"
    outside.write_text(sha(b"x") + "\n")  # would even parse as a ref
    blobctl("put", "-", input=b"x", check=True)
    beside_before = sorted(p.name for p in tmp_path.iterdir())
    before = outside.stat()
    codes: dict[int, int] = {}
    for key in HOSTILE_KEYS[::2]:
        try:
            keys.validate_name(key)
            valid = True
        except UsageError:
            valid = False
        for args in (["put", "--name", key, "-"], ["get", "--", key], ["rm", "--", key]):
            result = blobctl(*args, input=b"x")
            codes[result.code] = codes.get(result.code, 0) + 1
            assert "Traceback" not in result.err and len(result.err.strip().splitlines()) <= 1, (args, result.err)
            assert result.code in ((0, 2, 3) if valid else (2, 3)), (args, result.code, result.err)
    after = outside.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == beside_before
    report(9, "hostile keys and names",
           f"{len(HOSTILE_KEYS[::2])} keys x put/get/rm via CLI -> exit codes {dict(sorted(codes.items()))}; "
           "400 Hypothesis keys in-process and 200 hostile remotes: 0 file events outside the store")


class HostileRemote:
    """A remote whose refs/ listing (with each body's MD5, as S3 lists), ref bodies and
    packed-refs are chosen by the test."""

    url = "hostile://remote"
    lists_md5 = True

    def __init__(self, refs: dict[str, bytes], pack: bytes):
        self.refs, self.pack = refs, pack

    def list_with_md5(self, prefix: str):
        return [(key, hashlib.md5(body).hexdigest()) for key, body in self.refs.items() if key.startswith(prefix)]

    def read_bytes(self, key: str, limit: int = 200) -> bytes:
        if key not in self.refs:
            raise NotFoundError(f"{key} not found")
        return self.refs[key][:limit + 1]

    read_at_most = Backend.read_at_most  # through open_read below

    def open_read(self, key: str):
        if key == packed_refs.PACK_KEY:
            return io.BytesIO(self.pack)
        if key in SERVED_OBJECTS:
            return io.BytesIO(SERVED_OBJECTS[key])
        raise NotFoundError(f"{key} not found")

    def close(self) -> None:
        pass


#: Objects the hostile remote really has, so that names pointing at them get bound.
SERVED_OBJECTS = {keys.object_key(sha(content)): codec.compress_small(content, 3) for content in (b"x", b"y")}
good_ref_bodies = st.sampled_from([f"{sha(b'x')}\n".encode(), f"{sha(b'y')}\n".encode()])
ref_bodies = st.one_of(st.binary(max_size=300), st.sampled_from([
    b"../../outside\n", b"/etc/passwd\n", (sha(b"x") + "\n" + sha(b"y")).encode(),
    sha(b"x").upper().encode() + b"\n", b"sha256:" + sha(b"x").encode(), b"\0" * 65]))
ref_keys = hostile_text.map(lambda k: "refs/" + k)


def packs(refs: dict[str, bytes]):
    """Junk, or lines pairing the remote's names (and others) with hashes, right or not."""
    digests = st.sampled_from([sha(b"x"), sha(b"y")]) | ref_bodies.map(lambda body: body.decode("latin-1").strip())
    names = st.sampled_from(sorted(key[len("refs/"):] for key in refs) or ["x"]) | hostile_text
    lines = st.lists(st.tuples(digests, names).map(lambda pair: f"{pair[0]} {pair[1]}\n"), max_size=8)
    return st.binary(max_size=300) | lines.map(lambda found: "".join(found).encode("utf-8", "surrogateescape"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), refs=st.dictionaries(ref_keys | st.sampled_from(["refs/a", "refs/team/b"]),
                                            ref_bodies | good_ref_bodies, max_size=6))
def test_hostile_remote_refs_are_refused(store_dir, data, refs):
    """Pulling from and resolving through a remote whose listing, ref bodies and
    packed-refs are hostile: only blobctl errors, nothing outside the local store is
    touched, and every name bound holds what its ref holds, whatever the pack says."""
    pack = data.draw(packs(refs))
    store_dir.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=store_dir))  # each example its own store
    (root / "config.toml").write_text('[[mounts]]\nprefix = "r"\nremote = "/nonexistent"\n')
    with Store(Config.load(str(root))) as store:
        store.overlay._backends["r/"] = HostileRemote(refs, pack)
        with file_access_confined_to(store.root) as escapes:
            for operation in [lambda: store.overlay.pull(["r/"])] + [
                    (lambda key=key: store.resolve("r/" + key[len("refs/"):])) for key in refs]:
                try:
                    operation()
                except BlobctlError:
                    pass
        assert escapes == []
        for name, digest in store.iter_refs():
            assert keys.is_full_hash(digest) and refs["refs/" + name[len("r/"):]].strip() == digest.encode()


# -- fuzzing every parser of untrusted input ---------------------------------------------
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_url_checks_accept_only_known_schemes(url):
    scheme = url_scheme(url)
    try:
        checked = check_url(url)
    except UsageError:
        return
    assert scheme in ("", "file", "http", "https", "s3")
    assert checked == url if scheme else os.path.isabs(checked)  # a directory: made absolute


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_parse_ref_accepts_exactly_one_hash(content):
    try:
        digest = keys.parse_ref(content, "fuzzed")
    except IntegrityError:
        return
    assert keys.is_full_hash(digest) and content.strip() == digest.encode()


toml_atoms = st.sampled_from([
    "max_size", "gc_grace", "remote_timeout", "jobs", "compression_level", "durability",
    "auto_gc", "s3", "s3.endpoint", "mounts", "[[mounts]]", "[s3]", "prefix", "remote",
    "read_only", "=", " ", "\n", '"', "'", "[", "]", "{", "}", ",", ".", "nan", "inf", "-inf",
    "1e400", "0", "-1", "20 GB", "1979-05-27", "true", "\\u0000", '"""', "#",
])
toml_like = st.lists(toml_atoms, max_size=40).map("".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(toml_like, st.text(max_size=300)))
def test_config_files_load_or_fail_with_one_config_line(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = ConfigFile.load(path, allow_mounts=True)
    except ConfigError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    config = Config(tmp_path, "--store", ConfigFile(tmp_path / "none.toml"), loaded)
    for key in loaded.values:
        config.get(key)
    config.remote_settings()


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "x" + ".x" * 3000 + " = 1\n",
    "remote_timeout = nan\n", "remote_timeout = inf\n", "remote_timeout = 0\n",
    'remote_timeout = "99999999999999999999w"\n', "gc_grace = nan\n", "gc_grace = -inf\n",
])
def test_deep_or_non_finite_configs_are_config_errors(store_dir, text):
    store_dir.mkdir()
    (store_dir / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"config\.toml(:1)?: "):
        Config.load(str(store_dir)).remote_settings()


BAD_CONFIGS = {
    "malformed TOML": ("max_size = = 3\n", "malformed TOML"),
    "wrong type": ("jobs = \"many\"\n", "jobs"),
    "unknown key": ("\nmax_sise = 3\n", "unknown key 'max_sise'"),
    "invalid size": ("max_size = \"12 parsecs\"\n", "invalid size"),
    "negative size": ("max_size = -5\n", "max_size"),
    "bad age": ("gc_grace = \"soon\"\n", "invalid age"),
    "unknown scheme": ('[[mounts]]\nprefix = "a"\nremote = "gopher://x"\n', "gopher"),
    "mount not a table": ("mounts = 3\n", "mounts"),
    "not UTF-8": (b"max_size = \"\xff\"\n", "not UTF-8"),
    "deep nesting": ("a = " + "[" * 5000 + "]" * 5000 + "\n", "config.toml"),
    "NaN timeout": ("remote_timeout = nan\n", "remote_timeout"),
}


def test_bad_config_and_arguments_are_one_clear_line(tmp_path):
    """Through the CLI, each broken store config or argument gives exit 2 and one line
    naming the file (and line where there is one), never a traceback."""
    outcomes = []
    for label, (content, needle) in BAD_CONFIGS.items():
        store_dir = tmp_path / label.replace(" ", "-")
        store_dir.mkdir()
        path = store_dir / "config.toml"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        result = run_in(store_dir, "stat")
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, (label, result.err)
        assert str(path) in lines[0] and needle in lines[0], (label, lines[0])
        outcomes.append(label)
    store_dir = tmp_path / "args"
    for args, needle in [(["get", "x", "--range", "9:1"], "invalid range"),
                         (["config", "set", "max_size", "huge"], "invalid size"),
                         (["config", "set", "remote_timeout", "0"], "remote_timeout"),
                         (["config", "set", "no_such_key", "1"], "unknown config key"),
                         (["mount", "m", "ftp://host/x"], "unknown remote URL scheme"),
                         (["put", "--name", "a", "x", "y"], "one input"),
                         (["frobnicate"], "no such command"), (["rm"], "missing argument")]:
        result = run_in(store_dir, *args)
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in result.err, \
            (args, result.err)
        outcomes.append(" ".join(args))
    report(15, "bad config and arguments",
           f"{len(BAD_CONFIGS)} broken configs + {len(outcomes) - len(BAD_CONFIGS)} bad argument lists "
           "-> all exit 2 with one line naming file/line; 0 tracebacks")
