"""Generated files (man page, completion scripts) stay in sync with the app, render cleanly,
and completion works in a real shell without ever printing an error."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from blobctl import errors
from blobctl.cli import COMPLETE_VAR, walk_commands
from tests.conftest import blobctl_executable

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """The tool's path; skip without it on a developer machine, fail under CI."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (scripts/test installs it)")
        pytest.skip(f"{name} is not installed")
    return found


def test_generated_files_are_current():
    result = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_man_page_renders_without_warnings():
    groff = require_tool("groff")
    result = subprocess.run([groff, "-man", "-ww", "-z", "man/blobctl.1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""


def test_man_page_has_every_section_command_and_option():
    page = (ROOT / "man/blobctl.1").read_text()
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "FILES", "EXIT STATUS",
                    "EXAMPLES"]:
        assert f"\n.SH {section}\n" in page
    for words, command, ctx in walk_commands():
        if words and not hasattr(command, "list_commands"):
            assert f'.SS "{" ".join(words)}"' in page
        for param in command.get_params(ctx):
            for flag in param.opts if param.param_type_name == "option" else []:
                assert flag.replace("-", "\\-") in page, (words, flag)


def test_exit_codes_agree_in_readme_man_page_and_code():
    readme = (ROOT / "README.md").read_text().split("## Exit codes")[1].split("\n## ")[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", readme, re.M)]
    defined = sorted(value for name, value in vars(errors).items() if name.startswith("EXIT_"))
    assert documented == defined == [0, 1, 2, 3, 4, 5, 130, 143]
    man_section = (ROOT / "man/blobctl.1").read_text().split(".SH EXIT STATUS")[1].split(".SH ")[0]
    assert [int(code) for code in re.findall(r"\\fB(\d+)\\fR", man_section)] == documented


def test_every_command_has_a_one_line_summary():
    """What `blobctl --help` lists for each command fits without being cut off with '...'."""
    for words, command, _ in list(walk_commands())[1:]:
        summary = command.get_short_help_str(limit=60)
        assert summary and not summary.endswith("..."), (words, summary)


def test_version_does_not_import_rich():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "blobctl", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("blobctl ")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert "blobctl.cli" in imported and not {m for m in imported if m.split(".")[0] == "rich"}


def complete_in_bash(store: Path, *words: str) -> list[str]:
    """Source the committed bash script and complete `blobctl WORDS...`, the cursor at the
    end; the last word is the one being completed ('' for a new one)."""
    bash = require_tool("bash")
    line = " ".join(shlex.quote(word) for word in ("blobctl", *words))
    typed = " ".join(shlex.quote(word) if word else "" for word in ("blobctl", *words))  # as bash's COMP_LINE
    script = (f"source {ROOT / 'completions/blobctl.bash'}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
              f"COMP_LINE={shlex.quote(typed)}; COMP_POINT=${{#COMP_LINE}}; "
              "_blobctl_completion blobctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = {**os.environ, "PATH": f"{Path(blobctl_executable()[0]).parent}:{os.environ['PATH']}",
           "BLOBCTL_STORE": str(store)}
    result = subprocess.run([bash, "--norc", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_commands_names_mounts_and_settings(blobctl, store_dir, tmp_path):
    for name in ["datasets/mnist.npz", "datasets/cifar/train.bin", "models/m.bin"]:
        blobctl("put", "--name", name, "-", input=name.encode(), check=True)
    (tmp_path / "remote").mkdir()
    blobctl("mount", "team", tmp_path / "remote", check=True)
    assert complete_in_bash(store_dir, "s") == ["stat"]
    assert set(complete_in_bash(store_dir, "get", "")) == {
        "team/", "datasets/mnist.npz", "datasets/cifar/train.bin", "models/m.bin"}
    assert complete_in_bash(store_dir, "rm", "x", "datasets/c") == ["datasets/cifar/train.bin"]
    assert complete_in_bash(store_dir, "umount", "") == ["team/"]
    assert complete_in_bash(store_dir, "config", "set", "max_") == ["max_size"]


def completion_env(store: Path) -> dict:
    return {**os.environ, "PATH": f"{Path(blobctl_executable()[0]).parent}:{os.environ['PATH']}",
            "BLOBCTL_STORE": str(store)}


def run_shell(argv: list[str], script: str, store: Path) -> str:
    """Run `script` in a real shell against `store`; its stdout (it must not complain)."""
    result = subprocess.run([*argv, script], capture_output=True, text=True,
                            env=completion_env(store), timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def test_fish_completes_commands_and_names(blobctl, store_dir):
    """The committed fish script, sourced in a real fish, offers commands and names."""
    fish = require_tool("fish")
    blobctl("put", "--name", "datasets/mnist.npz", "-", input=b"x", check=True)
    script = (f"source {ROOT / 'completions/blobctl.fish'}; "
              "complete -C 'blobctl pu'; complete -C 'blobctl get dat'")
    offered = [line.split("\t")[0] for line in run_shell([fish, "--no-config", "-c"], script, store_dir).splitlines()]
    assert offered == ["pull", "push", "put", "datasets/mnist.npz"]


def test_zsh_script_registers_and_its_protocol_answers(blobctl, store_dir):
    """The committed zsh script loads under compinit and binds its function to blobctl;
    the function evaluates what blobctl answers for the words typed so far."""
    zsh = require_tool("zsh")
    blobctl("put", "--name", "datasets/mnist.npz", "-", input=b"x", check=True)
    script = (f"autoload -U compinit; compinit -u; source {ROOT / 'completions/_blobctl'}; "
              "print -r -- $_comps[blobctl]")
    assert run_shell([zsh, "-f", "-c"], script, store_dir).strip() == "_blobctl_completion"
    answer = subprocess.run(blobctl_executable(), capture_output=True, text=True, timeout=60,
                            env={**completion_env(store_dir), "_TYPER_COMPLETE_ARGS": "blobctl get dat",
                                 COMPLETE_VAR: "complete_zsh"})
    assert answer.returncode == 0 and '"datasets/mnist.npz"' in answer.stdout and answer.stderr == ""


def test_completion_is_silent_on_a_broken_or_missing_store(store_dir, tmp_path):
    """Errors during completion would be printed into the user's prompt: there must be none."""
    store_dir.mkdir()
    (store_dir / "config.toml").write_text("max_size = [broken\n")
    missing = tmp_path / "no-store-here"
    for store in [store_dir, missing]:
        result = subprocess.run(blobctl_executable(), capture_output=True, text=True,
                                env={**os.environ, "BLOBCTL_STORE": str(store), COMPLETE_VAR: "complete_bash",
                                     "COMP_WORDS": "blobctl get ", "COMP_CWORD": "2"})
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "", "")
    assert not missing.exists()


def test_bash_completes_setting_values_and_store_only_for_the_user_config(store_dir):
    assert "store" not in complete_in_bash(store_dir, "config", "set", "")  # rejected without --user
    assert complete_in_bash(store_dir, "config", "set", "--user", "st") == ["store"]
    assert complete_in_bash(store_dir, "config", "unset", "st") == []
    assert complete_in_bash(store_dir, "config", "get", "st") == ["store"]
    assert complete_in_bash(store_dir, "config", "set", "durability", "") == ["on", "off"]
    assert complete_in_bash(store_dir, "config", "set", "auto_gc", "f") == ["false"]


MARK = "@@"  # typed after the Tab: once the shell shows it, the completion has run


@pytest.fixture
def tab_in_shell(tmp_path, store_dir):
    """Type a command line and Tab into a fresh interactive bash or zsh in tmux, with the
    completion installed as packages install it (bash: the script sourced; zsh: _blobctl
    autoloaded from fpath after compinit). Returns the screen once the shell has read the
    keys after the Tab. The working directory holds one file, so file names offered show."""
    tmux = require_tool("tmux")
    rc, cwd = tmp_path / "rc", tmp_path / "cwd"
    rc.mkdir()
    cwd.mkdir()
    (cwd / "only-file").touch()
    (rc / "bashrc").write_text(f"PS1='$ '\nsource {shlex.quote(str(ROOT / 'completions/blobctl.bash'))}\n")
    (rc / ".zshrc").write_text(f"fpath=({shlex.quote(str(ROOT / 'completions'))} $fpath)\n"
                               f"autoload -U compinit; compinit -u -d {shlex.quote(str(rc / 'zcompdump'))}\n"
                               "PS1='$ '\n")
    shells = {"bash": f"{require_tool('bash')} --noprofile --rcfile {shlex.quote(str(rc / 'bashrc'))} -i",
              "zsh": f"env ZDOTDIR={shlex.quote(str(rc))} {require_tool('zsh')} -i"}
    env = completion_env(store_dir)
    prefix = "env " + " ".join(f"{name}={shlex.quote(env[name])}" for name in ("PATH", "BLOBCTL_STORE",
                                                                              "BLOBCTL_CONFIG", "NO_COLOR"))
    sockets = []

    def type_tab(shell: str, line: str) -> str:
        socket = f"blobctl-compl-{uuid.uuid4().hex[:8]}"
        sockets.append(socket)
        subprocess.run([tmux, "-L", socket, "new-session", "-d", "-x", "120", "-y", "30", "-c", str(cwd),
                        f"{prefix} {shells[shell]}"], check=True)

        def screen_once(ready) -> str:
            deadline = time.time() + 30
            while time.time() < deadline:
                shown = subprocess.run([tmux, "-L", socket, "capture-pane", "-p"], capture_output=True,
                                       text=True).stdout
                if ready(shown):
                    return shown
                time.sleep(0.05)
            pytest.fail(f"{shell} in tmux did not get there: {shown}")

        screen_once(lambda shown: shown.startswith("$"))  # the prompt: the shell reads keys now
        for keys in (["-l", line], ["Tab"], ["-l", MARK]):
            subprocess.run([tmux, "-L", socket, "send-keys", *keys], check=True)
        return screen_once(lambda shown: MARK in shown)

    yield type_tab
    for socket in sockets:
        subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True)


def test_zsh_autoloaded_from_fpath_completes_on_the_first_tab(blobctl, tab_in_shell):
    blobctl("put", "--name", "other/one", "-", input=b"x", check=True)
    assert f"$ blobctl get other/one {MARK}" in tab_in_shell("zsh", "blobctl get oth")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_store_option_given_with_equals_is_used(blobctl, tmp_path, tab_in_shell, shell):
    """bash splits `--store=DIR` into three words at '=': completion must see one option."""
    blobctl("--store", tmp_path / "cs", "put", "--name", "other/one", "-", input=b"x", check=True)
    assert f"$ blobctl --store=../cs get other/one {MARK}" in tab_in_shell(shell, "blobctl --store=../cs get oth")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_name_holding_an_equals_sign_completes_whole(blobctl, tab_in_shell, shell):
    """bash cuts the word being completed at '=' and replaces only the part after it."""
    blobctl("put", "--name", "runs/lr=0.1/model.bin", "-", input=b"x", check=True)
    assert f"$ blobctl get runs/lr=0.1/model.bin {MARK}" in tab_in_shell(shell, "blobctl get runs/lr=0.")
    assert f"$ blobctl get runs/lr=0.1/model.bin {MARK}" in tab_in_shell(shell, "blobctl get runs/lr=")
    blobctl("put", "--name", "team@home/x", "-", input=b"y", check=True)  # '@' is a word break too
    assert f"$ blobctl get team@home/x {MARK}" in tab_in_shell(shell, "blobctl get team@h")


@pytest.mark.parametrize("typed, shown", [("'runs/lr=0.", "'runs/lr=0.1/model.bin'"),
                                           ('"runs/lr=0.', '"runs/lr=0.1/model.bin"'),
                                           ("runs/lr\\=0.", "runs/lr=0.1/model.bin"),
                                           ("runs/'lr=0.", "runs/'lr=0.1/model.bin'"),
                                           ("'team@h", "'team@home/x'"),
                                           ('"runs/lr=0.1"/m', "runs/lr=0.1/model.bin"),
                                           ("r'uns/lr=0.1'/m", "runs/lr=0.1/model.bin")])
def test_a_quoted_or_escaped_word_break_does_not_cut_the_name(blobctl, tab_in_shell, typed, shown):
    """Quoting the '=' is how users got such names completed before: readline then does
    not break the word there, so the candidates must stay whole."""
    blobctl("put", "--name", "runs/lr=0.1/model.bin", "-", input=b"x", check=True)
    blobctl("put", "--name", "team@home/x", "-", input=b"y", check=True)
    assert f"$ blobctl get {shown} {MARK}" in tab_in_shell("bash", f"blobctl get {typed}")


def test_zsh_descriptions_keep_apostrophes(tab_in_shell):
    assert "Write an object's original bytes" in tab_in_shell("zsh", "blobctl g")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
@pytest.mark.parametrize("line, files", [("blobctl config set max_size ", False), ("blobctl gc --max-size ", False),
                                         ("blobctl get -o ", True)])
def test_file_names_are_offered_only_where_a_file_goes(tab_in_shell, shell, line, files):
    shown = tab_in_shell(shell, line)
    assert ("only-file" in shown) == files and (f"$ {line}{MARK}" in shown) == (not files), shown


def test_fish_offers_file_names_only_where_a_file_goes(store_dir, tmp_path):
    fish = require_tool("fish")
    (tmp_path / "only-file").touch()
    script = (f"source {ROOT / 'completions/blobctl.fish'}; cd {shlex.quote(str(tmp_path))}; "
              "complete -C 'blobctl config set max_size '; echo -; complete -C 'blobctl gc --max-size '; echo -; "
              "complete -C 'blobctl get -o '")
    assert run_shell([fish, "--no-config", "-c"], script, store_dir).split("-\n") == ["", "", "only-file\n"]
