"""What a user installs: the wheel holds the package, the man page and the completion
scripts, and nothing from the repository's tests or benchmarks."""

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
