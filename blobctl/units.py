"""Parse and format human sizes ("20 GB", "512MiB") and ages ("30d", "1h30m")."""

from __future__ import annotations

import math
import re

from blobctl.errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
    "p": 1000**5, "pb": 1000**5, "pib": 1024**5,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$", re.ASCII)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_MAX_SIZE = 2**63 - 1
#: Longest age accepted (100 years): every age stays usable as a timeout or a time delta.
_MAX_AGE = 100 * 365 * 86400


def parse_size(text: str | int) -> int:
    """Bytes from an int or a string like '20 GB', '1.5GiB', '0'. Decimal units are SI; a
    fraction of a byte is dropped. A float (`max_size = 1.5` in TOML) is refused: bytes?"""
    if isinstance(text, bool | float):
        raise UsageError(f"invalid size {text!r}", "use a number of bytes or e.g. '20 GB'")
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"invalid size {text!r}: must not be negative")
        return text
    match = _SIZE_RE.match(str(text)) if len(str(text)) <= 64 else None
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise UsageError(f"invalid size {text!r}", "use e.g. '500MB', '20 GB' or '1GiB'")
    from decimal import Decimal  # 1 ms of import that only sizes need

    value = int(Decimal(match.group(1)) * unit)  # exact: float made '2.01 GB' 2009999999 bytes
    if value > _MAX_SIZE:
        raise UsageError(f"invalid size {text!r}: too large")
    return value


def parse_age(text: str | int) -> float:
    """Seconds from an int or a string like '30d', '1h30m', '90s', '0'."""
    if isinstance(text, bool):
        raise UsageError(f"invalid age {text!r}", "use e.g. '1h', '30d' or '0'")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise UsageError(f"invalid age {text!r}: must be a finite number, not negative")
        seconds = float(text)
    else:
        compact = str(text).replace(" ", "").lower()
        parts = _AGE_PART_RE.findall(compact) if len(compact) <= 64 else []
        if compact.isascii() and compact.isdigit():
            seconds = float(compact)
        elif not parts or "".join(n + u for n, u in parts) != compact:
            raise UsageError(f"invalid age {text!r}", "use e.g. '90s', '1h30m', '30d' or '2w'")
        else:
            seconds = sum(float(n) * _AGE_UNITS[u] for n, u in parts)
    if seconds > _MAX_AGE:
        raise UsageError(f"invalid age {text!r}: longer than 100 years")
    return seconds


def format_count(n: int, noun: str) -> str:
    """'1 object', '2 objects', '1,000 objects': a number with its noun, singular or plural."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def format_size(n: int | None) -> str:
    """'1.5 GB' style, SI units like `ls -h --si`; exact bytes below 1 kB."""
    if n is None:
        return "-"
    if abs(n) < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if abs(value) < 1000 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_size_exact(n: int) -> str:
    """Exact, and accepted back by parse_size: 20000000000 -> '20 GB', 1500 -> '1500 B'."""
    for power, unit in ((15, "PB"), (12, "TB"), (9, "GB"), (6, "MB"), (3, "kB")):
        if n and n % 10**power == 0:
            return f"{n // 10**power} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """Exact, and accepted back by parse_age: 5400 -> '1h30m', 30 -> '30s', 0.5 -> '0.5s'."""
    if seconds != int(seconds):  # plain digits ('1e-07s' would not parse back), to the nanosecond
        return f"{seconds:.9f}".rstrip("0") + "s"
    rest, parts = int(seconds), []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest}s")
    return "".join(parts)


def format_age(seconds: float | None) -> str:
    """'3d', '5h', '42s': the largest whole unit, for human tables."""
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
