"""blobctl's shell completion: Typer's classes with the scripts fixed where they let
users down. Imported only when a shell asks (COMPLETE_VAR set).

- bash: the words are taken from the command line up to the cursor, not from
  COMP_WORDS, which bash splits at '=' (`--store=DIR` would arrive as three words).
- zsh: the script also works autoloaded from fpath (it completes on the first Tab),
  and apostrophes in descriptions survive without the RC_QUOTES option.
"""

from __future__ import annotations

import os

from typer._click.shell_completion import CompletionItem, add_completion_class, split_arg_string
from typer._completion_classes import BashComplete, ZshComplete

BASH_SCRIPT = r"""
%(complete_func)s() {
    local IFS=$'\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _BLOBCTL_LINE="${COMP_LINE:0:COMP_POINT}" \
                   %(autocomplete_var)s=complete_bash $1 ) )
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


class BlobctlBashComplete(BashComplete):
    source_template = BASH_SCRIPT

    def get_completion_args(self) -> tuple[list[str], str]:
        if os.environ.get("_BLOBCTL_LINE"):
            return _words_before_cursor(os.environ["_BLOBCTL_LINE"])
        return super().get_completion_args()  # a script from before _BLOBCTL_LINE


class BlobctlZshComplete(ZshComplete):
    source_template = ZSH_SCRIPT

    def format_completion(self, item: CompletionItem) -> str:
        # The line is evaluated inside a single-quoted word, where Typer writes ' as '',
        # which zsh reads as a quote only with RC_QUOTES: close, \', reopen instead.
        return super().format_completion(item).replace("''", "'\\''")


def register() -> None:
    """Typer's classes for the other shells, these for the ones listed above."""
    from typer.completion import completion_init

    completion_init()
    add_completion_class(BlobctlBashComplete, "bash")
    add_completion_class(BlobctlZshComplete, "zsh")
