"""The one exception family blobctl raises on purpose.

Every error carries its exit code and a one-line message (what failed, on which key or
path, and what to do). The CLI turns them into stderr text in exactly one place.
"""

from __future__ import annotations

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1  # I/O error, disk full, permission denied, anything unexpected
EXIT_USAGE = 2  # bad arguments, invalid key/name/size, malformed config
EXIT_NOT_FOUND = 3  # key, name, file or object does not exist
EXIT_INTEGRITY = 4  # stored or fetched data failed verification; fsck found problems
EXIT_REMOTE = 5  # a remote store could not be reached or refused the request
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (kill, timeout, a cancelled job): cleaned up as for Ctrl-C


class BlobctlError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(BlobctlError):
    """The user asked for something malformed: fix the input and retry."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file or value is malformed; the message names the file and line."""


class NotFoundError(BlobctlError):
    """A key, name, object or file does not exist."""

    exit_code = EXIT_NOT_FOUND


class IntegrityError(BlobctlError):
    """Data does not match its hash, or a zstd frame is damaged."""

    exit_code = EXIT_INTEGRITY


class PartialOutputError(IntegrityError):
    """Verification failed after part of the object was already written out."""


class RemoteError(BlobctlError):
    """A remote store failed: unreachable, timed out, refused, or answered nonsense."""

    exit_code = EXIT_REMOTE


class ReadOnlyError(UsageError):
    """A write was aimed at a read-only mount or backend."""


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a file name may hold any): messages
    are one line, and a name cannot move the cursor or recolour the user's terminal."""
    return text.translate(_ESCAPES)


def _escape(code: int) -> str:
    return {0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code & 0xFF:02x}")


#: C0 and C1 controls but the tab, DEL, and the lone surrogates that stand for a file
#: name's undecodable bytes (printed as such, one could be a C1 control).
_ESCAPES = {code: _escape(code) for code in [*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0),
                                                *range(0xDC80, 0xDD00)]}


def warn(text: str) -> None:
    """A problem worth telling the user that does not stop the command (stderr)."""
    import sys

    print(f"blobctl: warning: {one_line(text)}", file=sys.stderr)


def from_os_error(exc: OSError, action: str, path: object) -> BlobctlError:
    """Turn an OSError into one clear line: what we were doing, on which path, what to do."""
    import errno

    reason = exc.strerror or str(exc)
    code = exc.errno
    if code == errno.ENOENT:
        return NotFoundError(f"cannot {action} {path}: no such file or directory")
    if code in (errno.EACCES, errno.EPERM):
        return BlobctlError(f"cannot {action} {path}: permission denied", "check the file's permissions")
    if code == errno.EROFS:
        return BlobctlError(f"cannot {action} {path}: read-only file system")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return BlobctlError(f"cannot {action} {path}: no space left on device",
                            "free space or lower max_size and run 'blobctl gc'")
    if code == errno.EISDIR:
        return UsageError(f"cannot {action} {path}: it is a directory")
    return BlobctlError(f"cannot {action} {path}: {reason}")
