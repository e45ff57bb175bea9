"""Start-up stays lean: what the fast commands must not import (timing is the benchmark's
job, bench/run.py; these only pin the imports that cost the most)."""

from __future__ import annotations

import subprocess
import sys


def imported_modules(*args: str, stdin: bytes = b"") -> set[str]:
    """Modules the real command imports, from `python -X importtime`."""
    script = "import sys; from blobctl.cli import main; sys.argv[0] = 'blobctl'; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", script, *args],
                          input=stdin, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.decode().splitlines()
            if line.startswith("import time:")}


def test_version_imports_neither_storage_nor_rendering_libraries():
    modules = imported_modules("--version")

    assert not modules & {"rich", "sqlite3", "zstandard", "pydantic", "platformdirs", "tomllib"}


def test_get_does_not_import_pydantic(blobctl, tmp_path):
    (tmp_path / "a").write_bytes(b"alpha\n")
    digest = blobctl("put", tmp_path / "a", check=True).text.strip()

    modules = imported_modules("get", digest)

    assert "pydantic" not in modules and "rich" not in modules
    # each of these cost 2-4 ms of a ~30 ms budget, for work a small get never does
    assert not modules & {"json", "concurrent.futures", "secrets"}


def test_push_and_pull_with_jobs_do_not_import_pydantic(blobctl, tmp_path):
    """Their --jobs is the CLI's only int option: it is converted without typer's pydantic
    adapter too (~60-100 ms of imports)."""
    store, remote = tmp_path / "store", tmp_path / "remote"
    remote.mkdir()
    blobctl("--store", store, "mount", "team", remote, check=True)

    for args in (["push", "--jobs", "3"], ["pull", "team/", "-j", "2"]):
        assert "pydantic" not in imported_modules("--store", str(store), *args)


def test_get_builds_only_the_invoked_command(blobctl, tmp_path):
    """Building a Typer command costs ~1-2 ms: a run builds the one it invokes, not every
    command of its module."""
    (tmp_path / "a").write_bytes(b"alpha\n")
    digest = blobctl("put", tmp_path / "a", check=True).text.strip()
    script = ("import atexit, sys, typer.main as tm; built = []; real = tm.get_command_from_info; "
              "tm.get_command_from_info = lambda info, **kw: built.append(info.callback.__name__) or real(info, **kw); "
              "atexit.register(lambda: print(*built, file=sys.stderr)); "
              "from blobctl.cli import main; sys.argv[0] = 'blobctl'; main()")
    proc = subprocess.run([sys.executable, "-c", script, "get", digest], capture_output=True)

    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode().split() == ["get"]


def test_lazy_command_table_matches_the_registered_commands():
    import importlib

    import typer

    from blobctl.cli import COMMAND_MODULES, app

    for module in set(COMMAND_MODULES.values()):
        importlib.import_module(module)
    registered = {info.name or typer.main.get_command_name(info.callback.__name__): info.callback.__module__
                  for info in app.registered_commands}
    registered.update({info.name: info.typer_instance.registered_commands[0].callback.__module__
                       for info in app.registered_groups})

    assert registered == COMMAND_MODULES


def test_get_imports_only_its_own_command_module(blobctl, tmp_path):
    (tmp_path / "a").write_bytes(b"alpha\n")
    digest = blobctl("put", tmp_path / "a", check=True).text.strip()
    # importlib.import_module does not show in -X importtime, so ask sys.modules at exit.
    script = ("import atexit, sys; atexit.register(lambda: print(*sorted(sys.modules), file=sys.stderr)); "
              "from blobctl.cli import main; sys.argv[0] = 'blobctl'; main()")
    proc = subprocess.run([sys.executable, "-c", script, "get", digest], capture_output=True)

    modules = set(proc.stderr.decode().split())
    assert proc.returncode == 0, proc.stderr.decode()
    assert "blobctl.cli.store_cmds" in modules
    assert not modules & {"blobctl.cli.remote_cmds", "blobctl.cli.cache_cmds", "blobctl.cli.config_cmds"}


def test_the_console_script_loads_the_cli_only_when_run():
    """Spawned worker processes (a put of many files) import the script that started
    their parent: it must not pull in typer and rich, which they never use."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "blobctl"]
    proc = subprocess.run([sys.executable, "-c",
                           f"import sys, {script.module}; print(sorted(m for m in sys.modules "
                           "if m.split('.')[0] in ('typer', 'rich', 'click', 'blobctl')))"],
                          capture_output=True, text=True, check=True)

    assert proc.stdout.strip() == "['blobctl', 'blobctl.__main__']"
    assert script.attr == "main"
