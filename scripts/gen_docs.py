#!/usr/bin/env python3
"""Generate man/blobctl.1 and the bash, zsh and fish completion scripts from the app.

    python scripts/gen_docs.py           # rewrite the generated files
    python scripts/gen_docs.py --check   # exit 1, naming the stale files, if any differ

Everything comes from the running code so that the files cannot drift: commands,
arguments and options from walking the Typer app; the exit status table from the
README (checked against blobctl.errors by the tests); settings from blobctl.config;
completion scripts from `_BLOBCTL_COMPLETE=source_SHELL blobctl` itself.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blobctl import __version__  # noqa: E402
from blobctl.cli import COMPLETE_VAR, walk_commands  # noqa: E402
from blobctl.config import SETTINGS, env_var  # noqa: E402
from blobctl.cli.config_cmds import shown  # noqa: E402

MAN_PAGE = Path("man/blobctl.1")
COMPLETION_SCRIPTS = {"bash": Path("completions/blobctl.bash"), "zsh": Path("completions/_blobctl"),
                      "fish": Path("completions/blobctl.fish")}


def roff(text: str) -> str:
    """Plain text as roff: backslashes, minus signs (so options copy-paste), non-ASCII
    characters as named glyphs, and no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def paragraphs(text: str) -> str:
    """Help text (paragraphs separated by blank lines) as roff paragraphs."""
    blocks = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text.strip())]
    return "\n.PP\n".join(roff(block) for block in blocks if block)


def synopsis(command, ctx) -> str:
    """'[OPTIONS] KEY [PREFIX] FILE...' in man-page convention (optional parts in brackets)."""
    parts = ["[\\fIOPTIONS\\fR]"]
    for param in command.params:
        if param.param_type_name != "argument":
            continue
        name = f"\\fI{roff(param.metavar or param.name.upper())}\\fR" + ("..." if param.nargs != 1 else "")
        parts.append(name if param.required else f"[{name}]")
    if hasattr(command, "list_commands"):
        parts.append("\\fICOMMAND\\fR [\\fIARGS\\fR]...")
    return " ".join(parts)


def option_list(command, ctx, kind: str) -> list[str]:
    """.TP entries for the arguments or the options of a command, as --help shows them."""
    lines = []
    for param in command.get_params(ctx):
        if param.param_type_name != kind or getattr(param, "hidden", False):
            continue
        if kind == "argument":
            term, help_text = f"\\fI{roff(param.metavar or param.name.upper())}\\fR", param.help or ""
        else:
            names, help_text = param.get_help_record(ctx)  # e.g. ('-j, --jobs N', ...)
            *flags, last = names.split(", ")
            last, _, metavar = last.partition(" ")
            term = ", ".join(f"\\fB{roff(flag)}\\fR" for flag in [*flags, last])
            term += f" \\fI{roff(metavar)}\\fR" if metavar else ""
        lines += [".TP", term, paragraphs(help_text)]
    return lines


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    if match is None:
        raise SystemExit(f"README.md has no '## {title}' section")
    return match.group(1)


def exit_codes() -> list[tuple[str, str]]:
    """(code, meaning) rows of the README's exit code table: the one documented list."""
    return re.findall(r"^\| (\d+) \| (.+?) \|$", readme_section("Exit codes"), re.M)


def examples() -> list[str]:
    """The command lines of the README's Usage section, each with its comment below it."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", readme_section("Usage"), re.S):
        for example in block.splitlines():
            command, comment = (re.split(r"\s+# ", example, maxsplit=1) + [""])[:2]
            lines += [".TP", f"\\fB{roff(command)}\\fR", roff(comment)] if comment else [".PP", f"\\fB{roff(command)}\\fR"]
    return lines


def man_page() -> str:
    commands = list(walk_commands())
    _, app, app_ctx = commands[0]
    out = [f'.TH BLOBCTL 1 "" "blobctl {__version__}" "User Commands"', ".nh", ".ad l",
           ".SH NAME", "blobctl \\- a content\\-addressed store for the command line",
           ".SH SYNOPSIS", f".B blobctl\n{synopsis(app, app_ctx)}",
           ".SH DESCRIPTION", paragraphs(app.help),
           ".PP", "Data goes to standard output and messages to standard error. Listing commands take "
                  "\\fB\\-\\-json\\fR for scripts: sizes there are exact bytes and hashes are complete, "
                  "while tables show human units and shortened hashes. Progress bars appear only when "
                  "standard error is a terminal.",
           ".SH GLOBAL OPTIONS", *option_list(app, app_ctx, "option"),
           ".SH COMMANDS"]
    for words, command, ctx in commands[1:]:
        if hasattr(command, "list_commands"):
            continue  # a group: its subcommands follow, each with its own entry
        out += [f'.SS "{roff(" ".join(words))}"', f".B blobctl {roff(' '.join(words))}\n{synopsis(command, ctx)}",
                ".PP", paragraphs(command.help or "")]
        for kind, heading in (("argument", "Arguments:"), ("option", "Options:")):
            entries = option_list(command, ctx, kind)
            if entries:
                out += [".PP", heading, ".RS 4", *entries, ".RE"]
    out += [".SH ENVIRONMENT",
            ".TP", "\\fBBLOBCTL_CONFIG\\fR", "Path of the user config file.",
            ".TP", "\\fBBLOBCTL_QUIET\\fR", "When set and not 0, as \\fB\\-\\-quiet\\fR.",
            ".TP", "\\fBNO_COLOR\\fR", "When set, tables are drawn without colour.",
            ".TP", "\\fBAWS_ENDPOINT_URL\\fR, \\fBAWS_REGION\\fR, \\fBAWS_ACCESS_KEY_ID\\fR, "
                   "\\fBAWS_SECRET_ACCESS_KEY\\fR, \\fBAWS_SESSION_TOKEN\\fR",
            "S3 connection, when the matching \\fBs3.*\\fR setting is not configured.",
            ".PP", "Every setting can also be given as \\fBBLOBCTL_\\fR\\fIKEY\\fR (dots as underscores), "
                   "which overrides the config files:"]
    for key, setting in SETTINGS.items():
        default = "" if setting.default is None or "default:" in setting.help \
            else f" (default: {shown(setting, setting.default)})"
        out += [".TP", f"\\fB{roff(env_var(key))}\\fR", roff(setting.help + default)]
    out += [".SH FILES",
            ".TP", "\\fI~/.config/blobctl/config.toml\\fR",
            "The user config (XDG location; \\fBblobctl config path \\-\\-user\\fR prints it).",
            ".TP", "\\fI~/.local/share/blobctl/store\\fR", "The default store.",
            ".TP", "\\fISTORE/config.toml\\fR", "The store's settings and mounts.",
            ".TP", "\\fISTORE/objects/ab/cdef...\\fR", "Objects: zstd data named by its SHA\\-256 (zstd \\-d reads it).",
            ".TP", "\\fISTORE/refs/NAME\\fR", "Names: each holds the hash it points at.",
            ".TP", "\\fISTORE/index.sqlite\\fR", "Metadata index, rebuilt from the files when missing or unreadable.",
            ".SH EXIT STATUS"]
    for code, meaning in exit_codes():
        out += [".TP", f"\\fB{code}\\fR", roff(meaning.replace("`", ""))]
    out += [".SH EXAMPLES", *examples(),
            ".SH SEE ALSO", "\\fBsha256sum\\fR(1), \\fBzstd\\fR(1)"]
    return "\n".join(out) + "\n"


def completion_script(shell: str) -> str:
    """The script the app itself prints for `_BLOBCTL_COMPLETE=source_SHELL blobctl`."""
    result = subprocess.run([sys.executable, "-m", "blobctl"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, COMPLETE_VAR: f"source_{shell}"})
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"no {shell} completion script from blobctl: {result.stderr.strip()}")
    return result.stdout.strip() + "\n"


def generated() -> dict[Path, str]:
    files = {MAN_PAGE: man_page()}
    files.update({path: completion_script(shell) for shell, path in COMPLETION_SCRIPTS.items()})
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing them")
    args = parser.parse_args()
    stale = []
    for path, text in generated().items():
        target = ROOT / path
        if target.exists() and target.read_text() == text:
            continue
        stale.append(str(path))
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run: python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
