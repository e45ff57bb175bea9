"""docs/JSON.md is the contract for --json: every command with --json is documented there,
and each documented command prints exactly the documented keys."""

import json
import re
from itertools import takewhile
from pathlib import Path

from blobctl.cli import walk_commands

DOC = Path(__file__).resolve().parent.parent / "docs" / "JSON.md"

# One invocation per section of docs/JSON.md, keyed by the words between "blobctl" and
# "--json" in its heading; run in the order given, on one store.
INVOCATIONS = {
    "put": ["put", "--json", "--name", "team/model.bin", "{file}"],
    "ls": ["ls", "--json"],
    "ls --objects": ["ls", "--objects", "--json"],
    "stat": ["stat", "--json"],
    "stat KEY": ["stat", "--json", "team/model.bin"],
    "mount": ["mount", "--json"],
    "push": ["push", "--json"],
    "pull": ["pull", "--json", "team/"],
    "gc": ["gc", "--json", "--grace", "0"],
    "fsck": ["fsck", "--json"],
    "config list": ["config", "list", "--json"],
}


def documented_fields() -> dict[str, set[str]]:
    """Heading words -> the field names in the table under that heading."""
    sections = re.split(r"^## blobctl (.+?) --json\n", DOC.read_text(), flags=re.M)[1:]
    return {heading: set(re.findall(r"^\| `([\w.]+)` \|", body, re.M))
            for heading, body in zip(sections[::2], sections[1::2])}


def keys_of(value) -> set[str]:
    """Field names of an object, or of every element of an array (which must all agree);
    nested objects as dotted names."""
    if isinstance(value, list):
        shapes = [keys_of(item) for item in value]
        assert shapes and all(shape == shapes[0] for shape in shapes), shapes
        return shapes[0]
    names = set()
    for key, item in value.items():
        names.add(key)
        if isinstance(item, dict):
            names |= {f"{key}.{sub}" for sub in keys_of(item)}
    return names


def test_every_command_with_json_is_documented():
    with_json = {" ".join(words) for words, command, ctx in walk_commands()
                 if any("--json" in getattr(p, "opts", []) for p in command.get_params(ctx))}
    documented = {" ".join(takewhile(lambda word: word.islower() and not word.startswith("-"), heading.split()))
                  for heading in documented_fields()}  # 'stat KEY' -> 'stat', 'ls --objects' -> 'ls'
    assert with_json == documented
    assert set(documented_fields()) == set(INVOCATIONS)


def test_json_keys_match_the_document(blobctl, tmp_path):
    (tmp_path / "remote").mkdir()
    blobctl("mount", "team", tmp_path / "remote", check=True)
    (tmp_path / "model.bin").write_bytes(b"weights" * 1000)
    fields = documented_fields()
    for heading, args in INVOCATIONS.items():
        result = blobctl(*[arg.format(file=tmp_path / "model.bin") for arg in args], check=True)
        assert keys_of(json.loads(result.out)) == fields[heading], heading
