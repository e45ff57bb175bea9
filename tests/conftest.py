"""Shared fixtures: an isolated store and user config per test, and a runner that calls
the installed `blobctl` command in a subprocess the way a shell user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers"]


def pytest_terminal_summary(terminalreporter) -> None:
    """Print every reliability scenario's figures (tests/reliability.py) after the run."""
    from tests.reliability import FIGURES

    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def blobctl_executable() -> list[str]:
    """The console script installed beside this interpreter (what a user runs)."""
    script = Path(sys.executable).parent / "blobctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("blobctl")
    if found is None:
        pytest.fail("the blobctl command is not installed: pip install -e '.[test]'")
    return [found]


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Never touch the real user's config or store; no colour, no terminal."""
    monkeypatch.setenv("BLOBCTL_CONFIG", str(tmp_path / "user-config.toml"))
    monkeypatch.setenv("BLOBCTL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("NO_COLOR", "1")
    for name in list(os.environ):
        if name.startswith(("BLOBCTL_", "AWS_")) and name not in ("BLOBCTL_CONFIG", "BLOBCTL_STORE"):
            monkeypatch.delenv(name)


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def blobctl(store_dir):
    """Run `blobctl ARGS...` with optional stdin bytes; returns code, stdout bytes, stderr."""

    def run(*args: str, input: bytes | None = None, env: dict | None = None,
            timeout: float = 120, check: bool | None = None) -> Result:
        proc = subprocess.run(blobctl_executable() + [str(a) for a in args], input=input,
                              capture_output=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        result = Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
        if check and result.code != 0:
            raise AssertionError(f"blobctl {' '.join(map(str, args))} exited {result.code}: {result.err}")
        return result

    return run


@pytest.fixture
def store(store_dir):
    """An in-process Store on the isolated store directory (for unit tests)."""
    from blobctl.config import Config
    from blobctl.store import Store

    with Store(Config.load(str(store_dir))) as opened:
        yield opened
