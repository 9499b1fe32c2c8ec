"""Running one node as a process: build it, serve until SIGTERM, shut down cleanly."""

from __future__ import annotations

import logging
import pkgutil
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..failures import log_failure
from ..roles import RoleRegistry, default_registry
from ..wire.keys import KeyFiles
from .node import Node

__all__ = ["registry_with_plugins", "run_node"]

log = logging.getLogger(__name__)
#: Seconds between looks at the key files' modification times.
KEY_FILE_POLL = 2.0
#: Seconds between the warnings of a node run --insecure.
INSECURE_WARNING_EVERY = 60.0


def run_node(
    name: str,
    *,
    transport: Any,
    resolver: Any = None,
    signer: Any = None,
    role: str | None = None,
    diagnostic: bool = False,
    registry: RoleRegistry | None = None,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    stop: threading.Event | None = None,
    queue_prefix: str = "",
    ship_logs: bool = True,
) -> None:
    """Start node ``name`` and serve until ``stop`` is set (SIGTERM and SIGINT set it).

    On the way out the node stops consuming first, so messages not yet applied go back to
    their queues for another node, then lets its cells finish what their mailboxes hold.
    With ``ship_logs`` its Python log records at INFO and above go to the log sump
    (``Node(ship_logs=True)``), from its start until after it stopped.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        key_files = _key_files(signer)
        # Always handled: SIGHUP's default action ended a node run without --keys at once (no
        # leave, no clean stop), so a `kill -HUP` to every node after a rotation stopped some.
        signal.signal(signal.SIGHUP, lambda *_: _reload(key_files, "SIGHUP", name=name,
                                                        signer=signer))
    node = Node(
        name,
        transport=transport,
        resolver=resolver,
        registry=registry or default_registry(),
        signer=signer,
        role=role,
        diagnostic=diagnostic,
        system_cells=system_cells(),
        queue_prefix=queue_prefix,
        ship_logs=ship_logs,
    )
    exporter = None
    if metrics_port is not None:  # first: a port in use stops the start before anything ran
        from .metrics import serve_metrics

        exporter = serve_metrics(node, metrics_port, metrics_addr)
    node.start()
    log.info("node %s running as %s", name, node.role or "a spare")
    print(f"node {name} ready as {node.role or 'spare'}", flush=True)
    try:
        _serve(name, signer, stop)
    finally:
        log.info("node %s shutting down", name)
        node.stop()
        if exporter is not None:
            exporter.shutdown()
        transport.close()
        if resolver is not None:
            resolver.close()


def _serve(name: str, signer: Any, stop: threading.Event) -> None:
    """Wait for ``stop``; meanwhile reread changed key files, and without a signer say every
    ``INSECURE_WARNING_EVERY`` seconds that anyone on the broker may command this node."""
    key_files = _key_files(signer)
    if signer is None:
        log.warning("node %s runs INSECURE: nothing is signed or checked", name)
    last_warning = time.monotonic()
    while not stop.wait(KEY_FILE_POLL):
        if key_files is not None:
            _refresh(name, key_files, signer)
        if signer is None and time.monotonic() - last_warning >= INSECURE_WARNING_EVERY:
            log.warning("node %s runs INSECURE: nothing is signed or checked", name)
            last_warning = time.monotonic()


def _key_files(signer: Any) -> KeyFiles | None:
    keyring = getattr(signer, "keyring", None)
    return keyring if isinstance(keyring, KeyFiles) else None


def _refresh(name: str, key_files: KeyFiles, signer: Any) -> None:
    """Reread the key files if one changed, and say what came of it. A file caught half
    written is said once; the next poll reads it whole (its size and times change)."""
    try:
        if key_files.refresh():
            log.info("node %s: key files changed, reloaded: %s", name, key_files.keyring)
            _check_own_key(name, signer, key_files)
    except ConfigError as error:
        log.error("node %s: key files changed but NOT reloaded: %s; the old keys stay in force",
                  name, error)
    except Exception as error:  # the poll must go on: it is how a revocation takes effect
        log_failure(log, error, "node %s: rereading the key files", name)


def _reload(key_files: KeyFiles | None, why: str, *, name: str = "",
            signer: Any = None) -> None:
    # Runs in a signal handler: whatever it raised would stop the node where it waits.
    if key_files is None:
        log.warning("%s: no key files to reload: node %s was started without --keys (it "
                    "reads its key or secret once, at start)", why, name)
        return
    try:
        key_files.reload(strict=True)
    except ConfigError as error:
        log.error("keys NOT reloaded (%s): %s; the old keys stay in force", why, error)
    except Exception as error:
        log_failure(log, error, "keys NOT reloaded (%s)", why)
    else:
        log.info("keys reloaded (%s): %s", why, key_files.keyring)
        _check_own_key(name, signer, key_files)


def _check_own_key(name: str, signer: Any, key_files: KeyFiles) -> None:
    """Say so if the reloaded files dropped (or changed) the key this node signs with: the
    reload stands, as it may revoke other keys, but the node's own messages are now refused."""
    own = getattr(signer, "key", None)
    if own is not None and key_files.get(own.id) != own:
        log.error("node %s signs with key %r, which its key files no longer hold as it is: "
                  "its own messages are refused until it is restarted with a key they hold",
                  name, own.id)


def system_cells() -> tuple[type, ...]:
    """The cells every node hosts whatever its role: membership (heartbeats, detection,
    healing)."""
    from ..healing.membership import Membership

    return (Membership,)


def registry_with_plugins(specs: Iterable[str]) -> RoleRegistry:
    """The default registry plus the roles of each ``module:attr`` plug-in (``--plugin``).

    ``attr`` is a Cell class, registered under its ``role``, or a mapping from role names to
    a Cell class or a list of them. A plug-in that cannot be loaded is a ConfigError.
    """
    registry = default_registry()
    for spec in specs:
        if ":" not in spec:
            raise ConfigError(f"plug-in {spec!r} must be written MODULE:ATTR")
        try:
            found = pkgutil.resolve_name(spec)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"plug-in {spec!r} failed to load: {exc}") from exc
        for role, classes in _plugin_roles(spec, found).items():
            for cls in classes:
                registry.register(role, cls)
    return registry


def _plugin_roles(spec: str, found: Any) -> dict[str, list[Any]]:
    if isinstance(found, Mapping):
        return {role: list(c) if isinstance(c, list | tuple) else [c] for role, c in found.items()}
    role = getattr(found, "role", None)
    if not isinstance(found, type) or not isinstance(role, str):
        raise ConfigError(f"plug-in {spec!r} is neither a Cell class with a role nor a mapping "
                          "of roles to Cell classes")
    return {role: [found]}
