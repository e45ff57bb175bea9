"""blobctl as users get it, for the benchmarks to time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


class Product(NamedTuple):
    """The interpreter and blobctl command being timed."""

    python: str
    blobctl: str


def install_product(work: Path) -> Product:
    """A regular pip install of this checkout into a fresh venv under `work`, byte-compiled.
    A development (editable) install adds an import hook that costs ~18 ms per start, and
    where PYTHONDONTWRITEBYTECODE is set (as on these machines) its changed sources are
    compiled again at every start; timing that would not be timing the product."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(REPO)], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", site], check=True)
    return Product(python, str(venv / "bin" / "blobctl"))
