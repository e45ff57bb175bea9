"""Settings in one place: known keys, their types and defaults, and the precedence
a command's own options > environment (BLOBCTL_*) > store config.toml > user config.toml >
defaults.

TOML is read with tomllib and written with tomli-w. Every error names the file and line.
Mounts live in the store's config.toml as an ordered `[[mounts]]` array.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from blobctl import units
from blobctl.errors import BlobctlError, ConfigError, UsageError, from_os_error

CONFIG_FILE = "config.toml"
ENV_PREFIX = "BLOBCTL_"


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid boolean {value!r}", "use true or false")


_parse_bool.choices = ("true", "false")  # what completion offers


def _parse_int(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = value.strip() if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif text and text.isascii() and text.lstrip("-").isdigit() and len(text) < 20:
            number = int(text)
        else:  # floats (4.5, inf, nan), bools and anything else are not whole numbers
            number = None
        if number is None or not low <= number <= high:
            raise UsageError(f"invalid value {value!r}", f"use a whole number from {low} to {high}")
        return number
    return parse


def _parse_choice(*choices: str, aliases: dict[str, str] | None = None) -> Callable[[Any], str]:
    """One of `choices`, in any case (`ON`), or a word `aliases` maps to one."""
    def parse(value: Any) -> str:
        word = value.strip().lower() if isinstance(value, str) else str(value).lower()
        word = (aliases or {}).get(word, word)
        if word not in choices:
            raise UsageError(f"invalid value {value!r}", f"use one of {', '.join(choices)}")
        return word
    parse.choices = choices  # what completion offers
    return parse


def _parse_optional_size(value: Any) -> int | None:
    return None if value in ("", "none", "unlimited") else units.parse_size(value)


def _parse_timeout(value: Any) -> float:
    """An age above zero: a zero socket timeout would mean non-blocking, not "no wait"."""
    seconds = units.parse_age(value)
    if seconds <= 0:
        raise UsageError(f"invalid timeout {value!r}: must be more than 0", "use e.g. '30s' or '2m'")
    return seconds


def _parse_text(value: Any) -> str:
    if not isinstance(value, str):
        raise UsageError(f"invalid value {value!r}", "use a string")
    return value


def _parse_endpoint(value: Any) -> str:
    """An http(s) URL naming a host: the S3 client cannot use anything else, and would
    crash on it at the first request rather than say so ('127.0.0.1:9000', a stray space)."""
    import urllib.parse

    text = _parse_text(value)
    parts = urllib.parse.urlsplit(text)
    if text and (parts.scheme.lower() not in ("http", "https") or not parts.hostname
                 or any(char.isspace() or not char.isprintable() for char in text)):
        raise UsageError(f"invalid S3 endpoint {text!r}", "use a URL such as http://127.0.0.1:9000 or https://HOST")
    return text


def _parse_token(value: Any) -> str:
    """A region, key or token: printable ASCII without spaces, as the S3 client sends it in
    request headers (a trailing CR from a Windows .env file crashed it). The value is never
    shown: it may be a secret."""
    if not isinstance(value, str) or not all("!" <= char <= "~" for char in value):
        raise UsageError("invalid value (not shown): it must be text of printable ASCII characters "
                         "without spaces or line breaks", "check for a stray space, quote or line ending")
    return value


def _parse_directory(value: Any) -> str:
    """A directory path: an empty one (an unset shell variable, say) would mean the current
    directory, never what was meant."""
    if not _parse_text(value):
        raise UsageError("invalid value '': an empty path", "name a directory, e.g. ~/blobs")
    return value


class Setting(NamedTuple):
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False
    #: The value as the user would type it back into `config set`.
    format: Callable[[Any], str] = str
    #: Variables of other tools read when blobctl's own layers say nothing (AWS_*).
    fallback_env: tuple[str, ...] = ()


DEFAULT_S3_REGION = "us-east-1"


SETTINGS: dict[str, Setting] = {s.key: s for s in [
    Setting("store", _parse_directory, None, "store directory (user config or environment only)"),
    Setting("durability", _parse_choice("on", "off", aliases={"true": "on", "false": "off", "yes": "on",
                                                           "no": "off", "1": "on", "0": "off"}), "on",
            "'on': data, refs and directories are synced before a command exits 0; 'off': trust the OS"),
    Setting("compression_level", _parse_int(1, 19), 3, "zstd level for new objects"),
    Setting("verify_reads", _parse_choice("checksums", "sha256"), "checksums",
            "how get checks a large local object: 'checksums' (zstd's and the hash in its header), "
            "or 'sha256' (re-hash every byte, as fsck does)"),
    Setting("max_size", _parse_optional_size, None, "size limit enforced by gc, e.g. '20 GB'",
            format=units.format_size_exact),
    Setting("auto_gc", _parse_bool, True, "trim the store when a put, get or pull takes it over max_size"),
    Setting("gc_grace", units.parse_age, 3600.0, "objects accessed more recently than this are never evicted",
            format=units.format_duration),
    Setting("jobs", _parse_int(1, 256), 8, "parallel transfers for push and pull"),
    Setting("remote_timeout", _parse_timeout, 30.0, "time allowed per remote request",
            format=units.format_duration),
    Setting("remote_retries", _parse_int(0, 20), 3, "retries of a failed remote request, with backoff"),
    Setting("s3.endpoint", _parse_endpoint, None, "S3 endpoint URL (default: AWS_ENDPOINT_URL, then AWS)",
            fallback_env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")),
    Setting("s3.region", _parse_token, DEFAULT_S3_REGION, f"S3 region (default: AWS_REGION, then {DEFAULT_S3_REGION})",
            fallback_env=("AWS_REGION", "AWS_DEFAULT_REGION")),
    Setting("s3.access_key_id", _parse_token, None, "S3 access key (default: AWS_ACCESS_KEY_ID)", secret=True,
            fallback_env=("AWS_ACCESS_KEY_ID",)),
    Setting("s3.secret_access_key", _parse_token, None, "S3 secret (default: AWS_SECRET_ACCESS_KEY)", secret=True,
            fallback_env=("AWS_SECRET_ACCESS_KEY",)),
    Setting("s3.session_token", _parse_token, None, "S3 session token (default: AWS_SESSION_TOKEN)", secret=True,
            fallback_env=("AWS_SESSION_TOKEN",)),
]}


def env_var(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def mask(setting: Setting, value: Any) -> Any:
    """What may be shown of a value: secrets keep only their last 4 characters, and a URL
    (s3.endpoint) loses any user:password@ part."""
    if setting.secret and value:
        return "****" + str(value)[-4:] if len(str(value)) > 8 else "****"
    if setting.parse is _parse_endpoint and value:
        from blobctl.backends.common import mask_url

        return mask_url(value)
    return value


class Mount(NamedTuple):
    prefix: str  # '' or ends with '/'
    remote: str
    read_only: bool = False

    def covers(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def remote_name(self, name: str) -> str:
        """The name on the remote for a local name this mount covers ('team/x' -> 'x')."""
        return name[len(self.prefix):]


def mount_of(mounts: Iterable[Mount], remote: str, name: str) -> Mount | None:
    """The most specific of the mounts of `remote` that cover `name`, if any."""
    return next((m for m in covering_mounts(mounts, name) if m.remote == remote), None)


def covering_mounts(mounts: Iterable[Mount], name: str) -> list[Mount]:
    """The mounts whose prefix covers `name`, most specific (longest prefix) first, as
    with file-system mount points: the name belongs to the first, and its lookups fall
    through to the others ('' is the fallback for every name)."""
    return sorted((m for m in mounts if m.covers(name)), key=lambda m: -len(m.prefix))


@dataclass
class ConfigFile:
    """One TOML file: its flattened values and the raw text (for line numbers)."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    text: str = ""

    @classmethod
    def load(cls, path: Path, *, allow_mounts: bool, validate: bool = True) -> ConfigFile:
        """The file's values; unless `validate` is off (for commands that edit the file,
        which must be able to mend it), an unknown key or a bad value is a ConfigError.
        Either way a value is checked again where it is used (Config.lookup)."""
        try:
            text = path.read_text(encoding="utf-8").removeprefix("\ufeff")  # a BOM, as Notepad saves it
        except FileNotFoundError:
            return cls(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})", "fix or delete the file") from exc
        except OSError as exc:
            raise from_os_error(exc, "read config file", path) from exc
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: malformed TOML: {exc}", "fix or delete the file") from exc
        except RecursionError:  # tomllib recurses once per level of nested arrays/tables
            raise ConfigError(f"{path}: malformed TOML: nested too deeply", "fix or delete the file") from None
        config = cls(path, text=text)
        raw_mounts = data.pop("mounts", None)
        if raw_mounts is not None:
            if not allow_mounts:
                raise config.error("mounts", "mounts belong in a store's config, not the user's")
            for position, entry in enumerate(_as_list(raw_mounts, config)):
                mount = config._parse_mount(entry, position)
                if any(m.prefix == mount.prefix for m in config.mounts):
                    raise config.error("mounts", f"{mount.prefix or '(empty prefix)'!s} is mounted twice",
                                       "remove one of the two entries", line=config._mount_line(position))
                config.mounts.append(mount)
        for key, value in _flatten(data):
            if validate:
                setting = SETTINGS.get(key)
                if setting is None:
                    raise config.error(key, f"unknown key {key!r}", "see 'blobctl config list' for the known keys")
                try:
                    setting.parse(value)
                except BlobctlError as exc:
                    raise config.error(key, f"{key}: {exc}") from exc
            config.values[key] = value
        return config

    def _parse_mount(self, entry: Any, position: int) -> Mount:
        from blobctl import keys
        from blobctl.backends import check_url

        if not isinstance(entry, dict) or set(entry) - {"prefix", "remote", "read_only"} \
                or not isinstance(entry.get("prefix"), str) or not isinstance(entry.get("remote"), str):
            raise self.error("mounts", "malformed [[mounts]] entry",
                             "each needs prefix = \"...\" and remote = \"...\" (and optional read_only)",
                             line=self._mount_line(position))
        try:
            prefix = normalize_prefix(keys.validate_prefix(entry["prefix"]))
            return Mount(prefix, check_url(entry["remote"]), _parse_bool(entry.get("read_only", False)))
        except BlobctlError as exc:
            raise self.error("mounts", f"mount {entry['prefix']!r}: {exc}", line=self._mount_line(position)) from exc

    def _mount_line(self, position: int) -> int | None:
        """The line where the mount entry at `position` starts: its `[[mounts]]` header,
        or, in the inline form `mounts = [{...}, ...]` (as `mount` writes it), its `{`."""
        starts = [m.start() for m in re.finditer(r"^[ \t]*\[\[[ \t]*mounts[ \t]*\]\]", self.text, re.MULTILINE)]
        inline = re.search(r"^[ \t]*mounts[ \t]*=", self.text, re.MULTILINE)
        if not starts and inline:
            starts = [inline.start() + m.end() - 1
                      for m in re.finditer(r"[\[,](?:\s|#[^\n]*)*\{", self.text[inline.start():])]
        return self.text.count("\n", 0, starts[position]) + 1 if position < len(starts) else None

    def error(self, key: str, message: str, hint: str | None = None, *, line: int | None = None) -> ConfigError:
        """A ConfigError naming this file and the line where `key` is set (or `line`)."""
        line = line or self.line_of(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {message}", hint)

    def line_of(self, key: str) -> int | None:
        """The line setting `key`: 'a.b' as `a.b = ` at the top or `b = ` in table [a], a
        plain key before any table; a table header spelling the key ([[mounts]])."""
        *table, leaf = key.split(".")
        headers = list(re.finditer(r"^[ \t]*\[\[?[ \t]*([^\]]*?)[ \t]*\]", self.text, re.MULTILINE))
        bounds = [0] + [header.start() for header in headers] + [len(self.text)]
        for position, name in enumerate([""] + [header.group(1) for header in headers]):
            if position and name == key:
                return self.text.count("\n", 0, bounds[position]) + 1
            if name == ".".join(table):
                wanted = "|".join(re.escape(form) for form in (leaf, f'"{leaf}"', f"'{leaf}'"))
            elif name == "":
                wanted = re.escape(key)
            else:
                continue
            found = re.compile(rf"^[ \t]*(?:{wanted})[ \t]*=", re.MULTILINE).search(
                self.text, bounds[position], bounds[position + 1])
            if found:
                return self.text.count("\n", 0, found.start()) + 1
        return None

    def save(self) -> None:
        """Write values (nested by their dots) and mounts atomically. A symlinked file (a
        dotfiles repository) is written where it points; the file keeps its permissions,
        and a new one is readable by its owner only, as it may hold secrets."""
        import tomli_w

        from blobctl.fsutil import Syncer, atomic_write

        nested: dict[str, Any] = {}
        for key, value in sorted(self.values.items()):
            *parents, leaf = key.split(".")
            table = nested
            for part in parents:
                table = table.setdefault(part, {})
            table[leaf] = value
        if self.mounts:
            nested["mounts"] = [{"prefix": m.prefix, "remote": m.remote, "read_only": m.read_only}
                                for m in self.mounts]
        data = tomli_w.dumps(nested).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        target = Path(os.path.realpath(self.path))
        try:
            info = os.stat(target)
        except FileNotFoundError:
            mode = 0o600
        else:
            if not stat.S_ISREG(info.st_mode):  # /dev/null (BLOBCTL_CONFIG=/dev/null): never replace it
                raise UsageError(f"cannot write config {self.path}: not a regular file",
                                 "point BLOBCTL_CONFIG at a file to change the user config"
                                 if self.path == user_config_path() else None)
            mode = stat.S_IMODE(info.st_mode)
        syncer = Syncer()
        try:
            atomic_write(target, target.parent, lambda f: f.write(data), syncer, mode=mode)
        except OSError as exc:  # a full disk, say: the file is as it was
            raise from_os_error(exc, "write config", target) from exc
        syncer.flush()

    @contextmanager
    def updating(self, *, allow_mounts: bool) -> Iterator[ConfigFile]:
        """This file as it is now on disk, read and saved under a lock, for a change:
        two `config set`s at once each kept only their own setting (and a `mount` beside a
        `config set` could drop the mount). Not validated, so that a bad value can be
        mended; the lock is the file's directory, flock(2)ed (a lock file would be litter)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise from_os_error(exc, "lock config directory", self.path.parent) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = ConfigFile.load(self.path, allow_mounts=allow_mounts, validate=False)
            before = (dict(current.values), list(current.mounts))
            yield current
            if (current.values, current.mounts) != before:
                if _has_comments(current.text):
                    from blobctl.errors import warn

                    warn(f"{self.path} is rewritten without its comments (tomli-w cannot keep them)")
                current.save()
        finally:
            os.close(fd)


def _has_comments(text: str) -> bool:
    """Whether TOML text has a comment: a '#' outside quotes (multi-line strings aside)."""
    for line in text.splitlines():
        quote, escaped = None, False
        for char in line:
            if escaped:
                escaped = False
            elif quote == '"' and char == "\\":
                escaped = True
            elif quote is None and char == "#":
                return True
            elif char in "\"'" and quote in (None, char):
                quote = None if quote else char
    return False


def _as_list(value: Any, config: ConfigFile) -> list:
    if not isinstance(value, list):
        raise config.error("mounts", "'mounts' must be an array of tables ([[mounts]])")
    return value


#: Tables that group settings ([s3]); any other table is an unknown key as a whole.
_TABLES = {key.partition(".")[0] for key in SETTINGS if "." in key}


def _flatten(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(dotted key, value) pairs; descends only into known tables, so a deeply nested
    unknown table is reported by its first name rather than walked."""
    items = []
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            items.extend((f"{key}.{sub}", subvalue) for sub, subvalue in value.items())
        else:
            items.append((key, value))
    return items


def normalize_prefix(prefix: str) -> str:
    """Mount prefixes match whole name segments: 'team' and 'team/' both mean 'team/'."""
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def user_config_path() -> Path:
    if os.environ.get("BLOBCTL_CONFIG"):  # empty is unset, as for BLOBCTL_STORE
        return Path(os.environ["BLOBCTL_CONFIG"])
    from platformdirs import user_config_dir

    return Path(user_config_dir("blobctl")) / CONFIG_FILE


def default_store_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("blobctl")) / "store"


@dataclass
class Config:
    """The effective settings for one command, with where each value came from."""

    store_path: Path
    store_origin: str  # as lookup's origins: where store_path came from
    user_file: ConfigFile
    store_file: ConfigFile

    @classmethod
    def load(cls, store: str | None = None, *, validate: bool = True) -> Config:
        """Resolve the store directory first (--store > BLOBCTL_STORE > user config > default),
        then read its config (`validate`: see ConfigFile.load)."""
        user_file = ConfigFile.load(user_config_path(), allow_mounts=False, validate=validate)
        if store is not None:  # `--store "$DIR"` with DIR unset must not fall back to the usual store
            if not store:
                raise UsageError("--store is empty", "name a store directory, e.g. --store ~/blobs")
            store_path, origin = Path(store).expanduser(), "--store"  # '--store=~/x' reaches us unexpanded
        elif os.environ.get(env_var("store")):
            store_path, origin = Path(os.environ[env_var("store")]).expanduser(), f"env:{env_var('store')}"
        elif "store" in user_file.values:
            # a relative path is taken from the config file's directory, not from wherever a command runs
            store_path = user_file.path.parent / Path(user_file.values["store"]).expanduser()
            origin = str(user_file.path)
        else:
            store_path, origin = default_store_path(), "default"
        store_file = ConfigFile.load(store_path / CONFIG_FILE, allow_mounts=True, validate=validate)
        if "store" in store_file.values:
            raise store_file.error("store", "'store' cannot be set in a store's own config",
                                   "set it in the user config or BLOBCTL_STORE")
        return cls(store_path, origin, user_file, store_file)

    def lookup(self, key: str) -> tuple[Any, str]:
        """(parsed value, origin) for a known key; origin is 'env:VAR', a path, '--store' or
        'default'. (A command's own options, such as gc --max-size, override these where it
        reads them.)"""
        setting = SETTINGS[key]
        if key == "store":
            return os.path.abspath(self.store_path), self.store_origin
        layers = [(os.environ[var], f"env:{var}", None) for var in [env_var(key)] if var in os.environ]
        layers += [(file.values[key], str(file.path), file) for file in (self.store_file, self.user_file)
                   if key in file.values]
        if setting.fallback_env:  # the S3 settings: empty is unset, and AWS_* come last
            layers += [(os.environ[var], f"env:{var}", None) for var in setting.fallback_env if var in os.environ]
            layers = [layer for layer in layers if layer[0] != ""]
        if not layers:
            return setting.default, "default"
        raw, origin, source = layers[0]
        try:
            return setting.parse(raw), origin
        except BlobctlError as exc:
            if source is not None:
                raise source.error(key, f"{key}: {exc}") from exc
            raise ConfigError(f"{origin}: {key}: {exc}") from exc

    def get(self, key: str) -> Any:
        return self.lookup(key)[0]

    @property
    def mounts(self) -> list[Mount]:
        return self.store_file.mounts

    def remote_settings(self):
        from blobctl.backends.base import RemoteSettings

        return RemoteSettings(
            timeout=self.get("remote_timeout"), retries=self.get("remote_retries"),
            s3_endpoint=self.get("s3.endpoint"), s3_region=self.get("s3.region"),
            s3_access_key_id=self.get("s3.access_key_id"),
            s3_secret_access_key=self.get("s3.secret_access_key"),
            s3_session_token=self.get("s3.session_token"))

    def file_for(self, user: bool) -> ConfigFile:
        return self.user_file if user else self.store_file

    def set(self, key: str, value: str, *, user: bool) -> None:
        """Validate then persist a value, keeping TOML types (ints, bools) where they fit."""
        setting = known_setting(key)
        if key == "store" and not user:
            raise UsageError("'store' can only be set in the user config", "add --user")
        try:
            setting.parse(value)
        except BlobctlError as exc:
            raise UsageError(f"{key}: {exc}") from exc
        if key == "store":  # the directory meant now, wherever later commands run
            value = os.path.abspath(os.path.expanduser(value))
        with self._updating(user) as target:
            target.values[key] = _typed(setting, value)

    def add_mount(self, prefix: str, remote: str, *, read_only: bool) -> Mount:
        """Record a mount in the store's config (after the existing ones: mount order)."""
        from blobctl import keys
        from blobctl.backends import check_url, remote_identity
        from blobctl.backends.common import mask_url

        mount = Mount(normalize_prefix(keys.validate_prefix(prefix)), check_url(remote, new=True), read_only)
        with self._updating(user=False) as target:
            if any(m.prefix == mount.prefix for m in target.mounts):
                raise UsageError(f"{mount.prefix or '(empty prefix)'!s} is already mounted",
                                 f"unmount it first: blobctl umount '{mount.prefix}'")
            same = next((m for m in target.mounts if remote_identity(m.remote) == remote_identity(mount.remote)),
                        None)
            if same is not None:  # 'team/x' under team/ and 'x' under '' would be one remote ref
                raise UsageError(f"{mask_url(mount.remote)} is already mounted at {same.prefix or repr('')}",
                                 "its refs/ cannot hold the names of two prefixes apart; "
                                 f"unmount it first: blobctl umount '{same.prefix}'")
            target.mounts.append(mount)
        return mount

    def remove_mount(self, prefix: str) -> Mount:
        wanted = normalize_prefix(prefix)
        with self._updating(user=False) as target:
            for mount in target.mounts:
                if mount.prefix == wanted:
                    target.mounts.remove(mount)
                    return mount
            from blobctl.errors import NotFoundError

            raise NotFoundError(f"nothing is mounted at {prefix!r}", "see mounts with 'blobctl mount'")

    def unset(self, key: str, *, user: bool) -> bool:
        known_setting(key)
        with self._updating(user) as target:
            removed = target.values.pop(key, None) is not None
        return removed

    @contextmanager
    def _updating(self, user: bool) -> Iterator[ConfigFile]:
        """The user's or the store's file, fresh from disk and saved after the change (see
        ConfigFile.updating); this Config sees the change too."""
        with self.file_for(user).updating(allow_mounts=not user) as current:
            yield current
        if user:
            self.user_file = current
        else:
            self.store_file = current


def known_setting(key: str) -> Setting:
    if key not in SETTINGS:
        raise UsageError(f"unknown config key {key!r}", "see 'blobctl config list' for the known keys")
    return SETTINGS[key]


def _typed(setting: Setting, value: str) -> Any:
    """Keep TOML types natural: `jobs = 4` and `auto_gc = false`, but `max_size = "20 GB"`."""
    return setting.parse(value) if isinstance(setting.default, bool | int) else value
