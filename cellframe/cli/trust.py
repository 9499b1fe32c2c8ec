"""The CLI's side of trust: the key options every command shares, the signer they build, and
``cellframe keys`` (new, list).

A command signs with ``--key FILE`` (the first key of a key file), else with the cluster
secret (``--secret-file`` or ``$CELLFRAME_SECRET``), else, for a node given ``--keys``, with
the first ``node`` key of those files. A node verifies against ``--keys`` (reloaded on SIGHUP
or when a file changes); anything else verifies call-backs against its own key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..errors import CellframeError, ConfigError
from .failure import CliError
from .params import UTF8, FilePath

__all__ = ["key_options", "keys", "make_signer"]


def key_options(function: Any) -> Any:
    """``--secret-file`` and ``--key``: what a command signs with."""
    function = click.option(
        "--key", "key_file", type=FilePath(dir_okay=False), envvar="CELLFRAME_KEY",
        help="Key file to sign with (its first key; see `cellframe keys new`).")(function)
    return click.option(
        "--secret-file", type=FilePath(dir_okay=False),
        help="Cluster secret for signing (else $CELLFRAME_SECRET): one key, id 'cluster', "
             "allowed everything.")(function)


def make_signer(secret_file: str | None, *, key_file: str | None = None,
                key_files: tuple[str, ...] | list[str] = (), exchange: str | None = None,
                required: bool = False, node: str | None = None) -> Any:
    """The Signer these options name, or None if they name no key (an error if ``required``).
    From ``key_files`` alone, node ``node`` signs with the node key bound to it, else with
    the first bound to no node."""
    from ..wire.keys import KeyFiles, load_keys
    from ..wire.signing import DEFAULT_EXCHANGE, Signer, load_secret

    try:
        if key_file is not None and secret_file is not None:
            # --key won without a word, even from $CELLFRAME_KEY over a typed --secret-file.
            raise ConfigError("--key (or $CELLFRAME_KEY) and --secret-file both name a key to "
                              "sign with: give one")
        keyring = KeyFiles(key_files) if key_files else None
        own: Any = None
        if key_file is not None:
            own = load_keys(key_file)[0]
        elif secret_file is not None or os.environ.get("CELLFRAME_SECRET"):
            own = load_secret(file=secret_file)
        elif keyring is not None:
            own = _own_node_key(keyring.keyring, node)
            if own is None:
                raise ConfigError(f"no node key in the key files may sign for node "
                                  f"{node or '?'} (one bound to it, or to no node): give --key FILE")
        if keyring is not None and own is not None and keyring.get(own.id) != own:
            # Else the node started and refused its own heartbeats and call-backs.
            raise ConfigError(f"node {node or '?'} signs with key {own.id!r}, which its --keys "
                              "files do not hold (or hold with another secret or capabilities): "
                              "its own messages would be refused; add that key to them")
        if own is None:
            if required:
                raise ConfigError("no key: give --key FILE, --secret-file FILE or set "
                                  "$CELLFRAME_SECRET")
            return None
        return Signer(own, keyring=keyring, exchange=exchange or DEFAULT_EXCHANGE)
    except CellframeError as error:

        raise CliError(str(error)) from error


def _own_node_key(keyring: Any, node: str | None) -> Any:
    """The node key bound to ``node``, else the first one bound to no node, else None."""
    candidates = [k for k in keyring if k.kind == "node" and k.node in (None, node)]
    return next((k for k in candidates if k.node is not None), None) or next(iter(candidates), None)


@click.group()
def keys() -> None:
    """Make signing keys and show what they may do (never their secrets)."""


@keys.command("new")
@click.argument("name", type=UTF8)
@click.option("--allow", "allow", type=UTF8, multiple=True, metavar="'TARGET VERB...'",
              help="A capability: all, role:NAME, node:NAME, cell:NAME or key:ROUTING-KEY "
                   "(globs allowed), then verbs or *. Repeatable; none: 'all *'.")
@click.option("--node", "node_kind", is_flag=True,
              help="A node key (the nodes' own traffic), not an operator key; it speaks for "
                   "every node unless --for-node binds it to one.")
@click.option("--for-node", "for_node", type=UTF8, metavar="NODE",
              help="A node key that speaks for node NODE alone (implies --node): refused on "
                   "heartbeats, membership news, events and logs in another node's name.")
@click.option("-o", "--output", type=FilePath(dir_okay=False),
              help="File to write (default NAME.key); never overwritten.")
def new(name: str, allow: tuple[str, ...], node_kind: bool, for_node: str | None,
        output: str | None) -> None:
    """Write a new key NAME (a random 256-bit secret) to a key file readable by you alone."""
    from ..wire.keys import dump_keys, new_key

    path = Path(output or f"{name}.key")
    try:
        key = new_key(name, allow or ("all *",),
                      kind="node" if node_kind or for_node else "operator", node=for_node)
    except CellframeError as error:
        raise click.ClickException(str(error)) from error
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists: not overwritten") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(dump_keys([key]))
    bound = f" for node {key.node}" if key.node is not None else ""
    click.echo(f"wrote {key.kind} key {key.id}{bound} to {path}: "
               f"{', '.join(str(c) for c in key.allow)}")


@keys.command("list")
@click.argument("files", nargs=-1, required=True, type=FilePath(dir_okay=False))
def list_keys(files: tuple[str, ...]) -> None:
    """Show the id, kind and capabilities of every key in FILES (never a secret)."""
    from ..wire.keys import load_key_files, load_keys

    try:
        load_key_files(files)  # as a node given them all would
        found = [(key, file) for file in files for key in load_keys(file)]
    except CellframeError as error:
        raise click.ClickException(str(error)) from error
    for key, file in found:
        kind = f"{key.kind} ({key.node})" if key.node is not None else key.kind
        click.echo(f"{key.id}\t{kind}\t{'; '.join(str(c) for c in key.allow)}\t{file}")
