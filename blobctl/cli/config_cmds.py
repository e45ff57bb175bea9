"""blobctl config get|set|unset|list|path."""

from __future__ import annotations

from typing import Annotated

import typer

from blobctl import render
from blobctl.cli import app
from blobctl.cli.common import JsonOption, check_store_directory, load_config, silent_completion
from blobctl.config import SETTINGS, Setting, known_setting, mask
from blobctl.render import Column

config_app = typer.Typer(help="Read and write settings: the store's config.toml, or the user's with --user.",
                         short_help="Read and write settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

UserOption = Annotated[bool, typer.Option("--user", help="The user config instead of the store's.")]


@silent_completion
def _complete_setting(ctx: typer.Context, incomplete: str) -> list[str]:
    return [key for key in SETTINGS if key.startswith(incomplete)]


@silent_completion
def _complete_writable_setting(ctx: typer.Context, incomplete: str) -> list[str]:
    """Settings for set and unset: 'store' only with --user, as a store cannot name itself."""
    return [key for key in _complete_setting(ctx, incomplete) if key != "store" or ctx.params.get("user")]


@silent_completion
def _complete_value(ctx: typer.Context, incomplete: str) -> list[str]:
    """The values a setting takes when they are a short list (on/off, true/false...);
    nothing otherwise, rather than the shell's file names."""
    setting = SETTINGS.get(ctx.params.get("key") or "")
    choices = getattr(setting.parse, "choices", ()) if setting is not None else ()
    return [choice for choice in choices if choice.startswith(incomplete)]


KeyArgument = Annotated[str, typer.Argument(metavar="KEY", autocompletion=_complete_setting,
                                            help="A setting, e.g. max_size.")]
WritableKeyArgument = Annotated[str, typer.Argument(metavar="KEY", autocompletion=_complete_writable_setting,
                                                    help="A setting, e.g. max_size.")]


def shown(setting: Setting, value: object) -> str:
    """A value as the user would type it back into `config set` (secrets masked)."""
    value = mask(setting, value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return setting.format(value)


@config_app.command("get")
def config_get(ctx: typer.Context, key: KeyArgument) -> None:
    """Print the effective value of a setting (secrets masked)."""
    setting = known_setting(key)
    value, _ = load_config(ctx).lookup(key)
    print(shown(setting, value))


@config_app.command("set")
def config_set(ctx: typer.Context, key: WritableKeyArgument,
               value: Annotated[str, typer.Argument(metavar="VALUE", autocompletion=_complete_value,
                                                    help="The new value, e.g. '20 GB'.")],
               user: UserOption = False) -> None:
    """Validate and save a setting."""
    config = load_config(ctx, validate=False)
    if not user:
        check_store_directory(config)
    config.set(key, value, user=user)
    render.message(f"{key} set in {config.file_for(user).path}")


@config_app.command("unset")
def config_unset(ctx: typer.Context, key: WritableKeyArgument, user: UserOption = False) -> None:
    """Remove a setting from a config file.

    The next layer's value (another file, the environment or the default) then applies."""
    config = load_config(ctx, validate=False)
    removed = config.unset(key, user=user)
    render.message(f"{key} {'removed from' if removed else 'was not set in'} {config.file_for(user).path}")


@config_app.command("list")
def config_list(ctx: typer.Context,
                show_origin: Annotated[bool, typer.Option("--show-origin", help="Say where each value comes from.")] = False,
                as_json: JsonOption = False) -> None:
    """Every setting with its effective value (secrets masked)."""
    config = load_config(ctx)
    looked_up = [(setting, *config.lookup(key)) for key, setting in SETTINGS.items()]
    if as_json:
        render.emit_json([{"key": setting.key, "value": mask(setting, value), "origin": origin}
                          for setting, value, origin in looked_up])
        return
    columns = [Column("key"), Column("value")] + ([Column("origin")] if show_origin else [])
    render.table(columns, [[setting.key, shown(setting, value)] + ([origin] if show_origin else [])
                           for setting, value, origin in looked_up])


@config_app.command("path")
def config_path(ctx: typer.Context, user: UserOption = False) -> None:
    """Print the path of the store's (or the user's) config file."""
    print(load_config(ctx, validate=False).file_for(user).path)
