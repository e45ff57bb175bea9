"""What a user installs: the wheel holds the package, the man page and the completion
scripts, and nothing from the repository's tests or benchmarks."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from blobctl import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_has_package_man_page_and_completions_but_no_tests(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(tmp_path.glob("blobctl-*.whl"))).namelist()
    data_dir = f"blobctl-{__version__}.data"
    assert {name.split("/")[0] for name in names} == {"blobctl", data_dir, f"blobctl-{__version__}.dist-info"}
    assert "blobctl/cli/__init__.py" in names and "blobctl/__main__.py" in names
    assert {name.removeprefix(f"{data_dir}/data/") for name in names if name.startswith(data_dir)} == {
        "share/man/man1/blobctl.1", "share/bash-completion/completions/blobctl.bash",
        "share/zsh/site-functions/_blobctl", "share/fish/vendor_completions.d/blobctl.fish"}


def test_pipx_installs_a_clean_checkout(tmp_path):
    """`pipx install .` from a clean clone gives a working command and links the man page."""
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True, timeout=120)
    homes = {name: str(tmp_path / name) for name in ("home", "pipx", "bin", "man")}
    env = {**os.environ, "HOME": homes["home"], "PIPX_HOME": homes["pipx"],
           "PIPX_BIN_DIR": homes["bin"], "PIPX_MAN_DIR": homes["man"]}
    subprocess.run([sys.executable, "-m", "pipx", "install", "."], cwd=checkout, env=env,
                   check=True, capture_output=True, timeout=600)
    version = subprocess.run([str(tmp_path / "bin" / "blobctl"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"blobctl {__version__}"
    assert (tmp_path / "man" / "man1" / "blobctl.1").exists()
