"""blobctl's bash, zsh and fish completion: Typer's classes with the scripts and answers
fixed where they let users down. Imported only when a shell asks (COMPLETE_VAR set).

- File names are offered only where a file can go (a parameter without a completion
  of its own, such as FILE or --store DIR); elsewhere (a key, a size, a setting's
  value) what the parameter offers is the whole answer, even when it is nothing.
- bash: the words are taken from the command line up to the cursor, not from
  COMP_WORDS, which bash splits at '=' (`--store=DIR` would arrive as three words).
  bash then replaces only the part of the word after its last word-break character
  (COMP_WORDBREAKS: '=' and '@' among those names may hold, as in 'runs/lr=0.1/x'),
  so candidates lose what comes before it.
- zsh: the script also works autoloaded from fpath (it completes on the first Tab),
  and apostrophes in descriptions survive without the RC_QUOTES option.
"""

from __future__ import annotations

import os
import sys

from typer._click.shell_completion import (CompletionItem, _resolve_context, _resolve_incomplete,
                                           add_completion_class, split_arg_string)
from typer._completion_classes import BashComplete, FishComplete, ZshComplete

#: Exit status of `complete_bash` when the shell should complete file names itself
#: (0: what was printed is the whole answer, even when it is nothing).
BASH_FILES = 1
#: bash's COMP_WORDBREAKS unless a user changed it.
BASH_DEFAULT_WORDBREAKS = " \t\n\"'@><=;|&(:"

BASH_SCRIPT = r"""
%(complete_func)s() {
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _BLOBCTL_LINE="${COMP_LINE:0:COMP_POINT}" \
                   _BLOBCTL_WORDBREAKS="$COMP_WORDBREAKS" \
                   %(autocomplete_var)s=complete_bash $1 ) )
    # exit status 0 with no candidates: nothing fits here, not even a file name
    if [[ $? == 0 && ${#COMPREPLY[@]} == 0 ]]; then
        compopt +o default 2>/dev/null
    fi
    return 0
}

complete -o default -F %(complete_func)s %(prog_name)s
"""

ZSH_SCRIPT = """
#compdef %(prog_name)s

%(complete_func)s() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" %(autocomplete_var)s=complete_zsh %(prog_name)s)
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  # autoloaded from fpath by compinit: this is the first Tab, so complete it now
  %(complete_func)s "$@"
else
  compdef %(complete_func)s %(prog_name)s
fi
"""


def _words_before_cursor(line: str) -> tuple[list[str], str]:
    """(complete words after the program name, the word being typed) of a command line
    cut at the cursor."""
    words = split_arg_string(line)[1:]
    if words and not line[-1:].isspace():
        return words[:-1], words[-1]
    return words, ""


class _Answer:
    """The candidates for the word being typed, and whether file names fit there."""

    def answer(self) -> tuple[list[CompletionItem], bool]:
        args, incomplete = self.get_completion_args()
        ctx = _resolve_context(self.cli, self.ctx_args, self.prog_name, args)
        target, incomplete = _resolve_incomplete(ctx, args, incomplete)
        items = target.shell_complete(ctx, incomplete)
        plain = [item for item in items if item.type == "plain"]
        # Typer falls back to file names whenever there is no candidate; here only for a
        # parameter without a completion of its own, or when one asks for them (type file)
        own_completion = getattr(target, "_custom_shell_complete", None) is not None
        files = len(plain) < len(items) or (not plain and not own_completion
                                            and getattr(target, "param_type_name", "") in ("argument", "option"))
        return plain, files


class BlobctlBashComplete(_Answer, BashComplete):
    source_template = BASH_SCRIPT

    def get_completion_args(self) -> tuple[list[str], str]:
        if os.environ.get("_BLOBCTL_LINE"):
            return _words_before_cursor(os.environ["_BLOBCTL_LINE"])
        return super().get_completion_args()  # a script from before _BLOBCTL_LINE

    def complete(self) -> str:
        items, files = self.answer()
        if files:
            sys.exit(BASH_FILES)
        replaced = self._before_bash_word()
        return "\n".join(item.value[len(replaced):] for item in items if item.value.startswith(replaced))

    def _before_bash_word(self) -> str:
        """What of the word being completed bash keeps: up to its last word-break
        character (a script from before _BLOBCTL_WORDBREAKS gets bash's default set),
        unless that character is quoted ('runs/lr=0. or runs/lr\\=0.): see _bash_replaced."""
        _, incomplete = self.get_completion_args()
        breaks = os.environ.get("_BLOBCTL_WORDBREAKS", BASH_DEFAULT_WORDBREAKS)
        line = os.environ.get("_BLOBCTL_LINE")
        if line is None:  # a script from before _BLOBCTL_LINE: the word as bash split it
            cut = max((incomplete.rfind(char) for char in breaks), default=-1)
            return incomplete[:cut] if cut >= 0 and incomplete[cut] in "@$" else incomplete[:cut + 1]
        replaced = _bash_replaced(line, breaks)
        words = split_arg_string(replaced) if replaced.strip() else [""]
        tail = words[-1] if words else ""
        return incomplete[:len(incomplete) - len(tail)] if incomplete.endswith(tail) else ""


def _bash_replaced(line: str, breaks: str) -> str:
    """The text at the end of `line` that readline replaces with a candidate, found as
    rl_find_completion_word does: after the quote of an unclosed quoted part, else after
    the last word-break character that is neither quoted nor escaped (bash's
    char_is_quoted), keeping '@' and '$' (rl_special_prefixes)."""
    quoted, unclosed_from = _quoting(line)
    if unclosed_from is not None:
        return line[unclosed_from:]
    point = len(line)
    while point > 0:
        point -= 1
        if line[point] in breaks and point not in quoted:
            break
    if line[point] in breaks and point not in quoted and line[point] not in "@$":
        point += 1
    return line[point:]


def _quoting(line: str) -> tuple[set[int], int | None]:
    """The indexes of the characters of `line` that quotes or a backslash protect, the
    quotes themselves included, as bash's char_is_quoted counts them (the closing '"'
    of 'r"uns/lr=0.1"/m' is no word break); and where the text of a quote still open at
    the end starts, or None."""
    protected, quote, opened, escaped = set(), "", 0, False
    for index, char in enumerate(line):
        if escaped:
            protected.add(index)
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            protected.add(index)
            if char == quote:
                quote = ""
        elif char in "'\"":
            protected.add(index)
            quote, opened = char, index + 1
    return protected, opened if quote else None


class BlobctlZshComplete(_Answer, ZshComplete):
    source_template = ZSH_SCRIPT

    def format_completion(self, item: CompletionItem) -> str:
        # The line is evaluated inside a single-quoted word, where Typer writes ' as '',
        # which zsh reads as a quote only with RC_QUOTES: close, \', reopen instead.
        return super().format_completion(item).replace("''", "'\\''")

    def complete(self) -> str:
        items, files = self.answer()
        if items:
            return "_arguments '*: :((%s))'" % "\n".join(self.format_completion(item) for item in items)
        return "_files" if files else "return 1"


class BlobctlFishComplete(_Answer, FishComplete):
    def complete(self) -> str:
        items, files = self.answer()
        if os.environ.get("_TYPER_COMPLETE_FISH_ACTION") == "is-args":
            sys.exit(1 if files else 0)  # 0: the script's candidates only (--no-files)
        return "\n".join(self.format_completion(item) for item in items)


def register() -> None:
    """Typer's classes for the other shells, these for bash, zsh and fish."""
    from typer.completion import completion_init

    completion_init()
    for shell, cls in (("bash", BlobctlBashComplete), ("zsh", BlobctlZshComplete), ("fish", BlobctlFishComplete)):
        add_completion_class(cls, shell)
