"""blobctl's shell completion: Typer's classes with the scripts fixed where they let
users down. Imported only when a shell asks (COMPLETE_VAR set).

- zsh: the script also works autoloaded from fpath (it completes on the first Tab).
"""

from __future__ import annotations

from typer._click.shell_completion import add_completion_class
from typer._completion_classes import ZshComplete

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


class BlobctlZshComplete(ZshComplete):
    source_template = ZSH_SCRIPT


def register() -> None:
    """Typer's classes for the other shells, these for the ones listed above."""
    from typer.completion import completion_init

    completion_init()
    add_completion_class(BlobctlZshComplete, "zsh")
