"""bench/RESULTS.md is shared by several benchmark scripts: each owns one '## ' section."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# blobctl benchmark results\n\nEach section is rewritten by the script named in it.\n"


def write_section(title: str, body: str, results: Path = RESULTS) -> None:
    """Replace (or append) the section '## title' of the results file with `body`."""
    text = results.read_text() if results.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    results.write_text(text)
