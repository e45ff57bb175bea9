"""Unit tests for the parsers of untrusted input: hashes, names, prefixes, sizes, ages."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobctl import keys, units
from blobctl.errors import IntegrityError, UsageError

H = "a" * 64


@pytest.mark.parametrize("name", ["a", "datasets/mnist.npz", "x/y/z-1_2+3=4@5,6~7", "a.b", ".hidden/x",
                                  "by-hash/" + H, H[:63], H])
def test_valid_names(name):
    assert keys.validate_name(name) == name


@pytest.mark.parametrize("name", [
    "", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "-rf", "a\0b", "a\nb", "a b",
    "a\\b", "%2e%2e/x", "x" * 1025, "a/" + "y" * 256, "ü", "x\n", "a/b\n", "a\n/b",
])
def test_invalid_names(name):
    with pytest.raises(UsageError):
        keys.validate_name(name)


@given(st.text(max_size=300))
def test_any_accepted_name_stays_inside_refs(name):
    """Property: whatever is accepted is a relative path with no escaping segment."""
    try:
        keys.validate_name(name)
    except UsageError:
        return
    parts = name.split("/")
    assert not name.startswith("/") and ".." not in parts and "." not in parts and "" not in parts
    assert all(c.isascii() and c.isprintable() and c not in " \\" for c in name)


def test_hash_validation_and_prefixes():
    assert keys.validate_hash(H) == H
    assert keys.validate_hash("sha256:" + H) == H
    assert keys.validate_hash("A" * 64) == "a" * 64 and keys.validate_hash("sha256:" + H.upper()) == H
    for bad in ["a" * 63, "g" * 64, "sha256:xyz", "", "a" * 63 + "\n", "A" * 63 + "\n"]:
        with pytest.raises(UsageError):
            keys.validate_hash(bad)
    assert keys.is_hash_prefix("abcd") and not keys.is_hash_prefix("abc")
    assert not keys.is_hash_prefix("ABCD") and not keys.is_hash_prefix("abcd\n")
    assert keys.object_key(H) == f"objects/aa/{'a' * 62}"
    assert keys.hash_of_object_key(keys.object_key(H)) == H
    for stray in ["objects/aa", f"objects/aa/{'a' * 61}", f"objects/aa/{'a' * 62}/x", f"refs/aa/{'a' * 62}",
                  f"objects/aaa/{'a' * 61}", f"objects/AA/{'A' * 62}"]:
        assert keys.hash_of_object_key(stray) is None, stray


def test_prefix_validation():
    assert keys.validate_prefix("") == ""
    assert keys.validate_prefix("team/") == "team/"
    with pytest.raises(UsageError):
        keys.validate_prefix("../")


def test_parse_ref_rejects_anything_but_a_hash():
    assert keys.parse_ref(f"{H}\n".encode(), "r") == H
    for bad in [b"", b"zz\n", (H + "x").encode(), b"\0" * 300, f"{H}\n{H}\n".encode()]:
        with pytest.raises(IntegrityError):
            keys.parse_ref(bad, "r")


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("20 GB", 20 * 10**9), ("1GiB", 2**30), ("1.5k", 1500), ("512MiB", 512 * 2**20),
    (42, 42), ("7b", 7), ("3 TB", 3 * 10**12), ("2.01 GB", 2_010_000_000), ("2.03 kB", 2030), ("1 PB", 10**15),
    ("1.5 B", 1),
])
def test_parse_size(text, expected):
    assert units.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "x", "-1", "1 XB", "1e9", True, -5, "9" * 80, 1.5, 4.0])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        units.parse_size(text)


@pytest.mark.parametrize("text,expected", [("30d", 30 * 86400), ("1h30m", 5400), ("90s", 90), ("0", 0), ("2w", 1209600), (5, 5)])
def test_parse_age(text, expected):
    assert units.parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "1y", "h", "1h-", "-1h", "1 hour", True])
def test_parse_age_rejects(text):
    with pytest.raises(UsageError):
        units.parse_age(text)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.booleans()))
def test_size_and_age_parsers_never_crash(value):
    """Whatever comes in (TOML gives floats, nan and inf too): a usable number or a UsageError."""
    for parse in (units.parse_size, units.parse_age):
        try:
            result = parse(value)
        except UsageError:
            continue
        assert 0 <= result < float("inf")


def test_format_size_and_age():
    assert units.format_size(999) == "999 B"
    assert units.format_size(1500) == "1.5 kB"
    assert units.format_size(2 * 10**9) == "2.0 GB"
    assert units.format_size(None) == "-"
    assert units.format_age(90) == "1m" and units.format_age(3 * 86400) == "3d"
    for n in (0, 999, 1500, 20 * 10**9, 123_456_789, 10**15, 10**18):  # config get prints, config set takes
        assert units.parse_size(units.format_size_exact(n)) == n
    for seconds in (0, 0.5, 1e-7, 5400.25, 90061):
        assert units.parse_age(units.format_duration(seconds)) == pytest.approx(seconds)
