"""The shard cell's foundation: its store, its peers, its ring, and how it sends and resumes.

``ShardBase`` holds what every part of the replication protocol shares: the configuration,
the ``Store`` (opened under the data directory when the cell starts, closed when it stops),
the live peers and the ring view. It announces the cell with ``(shard-hello ...)`` on
``each.shard``, tracks peers and rings (see ``peers`` and ``ringview``) and recomputes the
ring on its tick when the live shard set changed.

Fire and forget: store call-backs (a record became durable) arrive on the store's commit
thread and broker returns (a message was unroutable) on a transport thread; both are handed to
the cell's own mailbox as ``_Resume`` items (``later``), so every piece of state is only ever
touched by the cell's thread and no handler ever waits.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pykka

from ..cell.cell import Cell
from ..cell.statemachine import transition
from ..errors import CellframeError, ClusterError, ConfigError
from ..failures import log_failure
from ..language.symbols import Keyword, Symbol
from ..store import Checkpoints, Record, Retention, Ring, Store, Transfer, now_micros
from ..wire.routing import cell_key, each_key
from .config import ShardConfig, store_directory
from .peers import ShardPeers
from .ringview import RingView
from .wire import quoted

__all__ = ["ROLE", "ShardBase"]

log = logging.getLogger(__name__)

ROLE = "shard"


@dataclass(frozen=True, slots=True)
class _Resume:
    """A continuation for the cell's own thread: a store call-back or a broker return."""

    action: Callable[..., None]
    args: tuple[Any, ...]


def _ignore_return(envelope: Any, reason: str) -> None:
    log.debug("message %s had no listener: %s", envelope.message_id, reason)


class ShardBase(Cell):
    """Store, peers, ring and messaging shared by the parts of the shard protocol."""

    role: ClassVar[str | None] = ROLE
    states = ("serving",)
    initial = "serving"
    bindings = ("membership.down.*", "membership.leave.*")
    #: The shard protocol's announcements, between shard cells only.
    node_verbs: ClassVar[Mapping[str, str | None]] = {
        "shard-hello": "node", "shard-leave": "node", "ring-please": None, "ring-table": None}
    #: Overrides applied over the DNS settings (see ``ShardCell.configured``).
    shard_overrides: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node_name: str = self.cell_host.name
        self.broken: str | None = None  # why this cell cannot serve, if it cannot
        self.config = self._read_config()
        assert self.config.shard_id is not None
        self.me: int = self.config.shard_id
        self.peers = ShardPeers(self.me)
        self.view = RingView(self.me, partitions=self.config.partitions,
                             replicas=self.config.replicas)
        self.store: Store | None = None
        self.checkpoints: Checkpoints | None = None
        self.started = time.monotonic()
        self.last_hello = -float("inf")
        self.asked_ring: dict[tuple[int, str], float] = {}
        self.peer_rings: dict[int, tuple[int, str]] = {}  # shard -> (version, digest) announced
        self.peer_ring_sizes: dict[int, int] = {}  # shard -> members of the table it announced
        self.peer_receiving: dict[int, frozenset[int]] = {}  # shard -> partitions it receives
        self.restored = False  # started from a saved ring
        self.adopted_at: float | None = None  # when it took a peer's table as its first
        self.stats: dict[str, int] = {}

    # -- configuration and life cycle -------------------------------------------------------

    def _read_config(self) -> ShardConfig:
        layers = self.cell_setting_layers()
        try:
            config = ShardConfig.from_settings(*layers, **self.shard_overrides)
        except ConfigError as error:
            # Running with other settings could mean another shard id, so another store
            # directory: the cell would serve as a shard that has lost its data. It stays out
            # of the ring instead, and says why in every answer.
            log.error("%s: %s; this shard cell will not serve", self.cell_name, error)
            self.broken = f"bad shard settings: {error}"
            config = ShardConfig(**self.shard_overrides)
        return config.with_defaults(self.node_name, self.cell_settings)

    def cell_tick_interval(self) -> float | None:
        return self.config.tick

    def on_start(self) -> None:
        if self.broken is not None:
            return
        directory = store_directory(self.config)
        try:
            store = Store(directory, shard=self.me, partitions=self.config.partitions,
                          fsync=self.config.fsync)
            try:
                checkpoints = Checkpoints(directory.with_name(directory.name + ".checkpoints"))
            except OSError:
                store.close()
                raise
            self.store, self.checkpoints = store, checkpoints
        except (CellframeError, OSError) as error:
            # The cell stays up and says why in every answer; the node and its peers go on.
            log.error("%s: cannot open the store in %s: %s", self.cell_name, directory, error)
            self.broken, self.store = f"cannot open the store: {error}", None
            return
        ring, receiving = self._load_ring()
        if ring is not None:
            self.restored = True
            self.view.install(ring, time.monotonic())
            self.on_restored(receiving)
        self._hello(reply=True)

    def _ring_path(self) -> Any:
        directory = store_directory(self.config)
        return directory.with_name(directory.name + ".ring.json")

    def _load_ring(self) -> tuple[Ring | None, list[int]]:
        """The table this cell last held, and the partitions it was still receiving: a
        restarted cell resumes with the ring its data is placed by (a new one would move data
        for nothing) and finishes its transfers from their checkpoints."""
        path = self._ring_path()
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            ring = Ring.from_dict(saved["ring"])
            receiving = [int(p) for p in saved.get("receiving", [])]
        except FileNotFoundError:
            return None, []
        except (OSError, ValueError, KeyError, TypeError, ClusterError) as error:
            log.warning("%s: ignoring the saved ring %s: %s", self.cell_name, path, error)
            return None, []
        if ring.partitions != self.config.partitions:
            return None, []
        return ring, [p for p in receiving if 0 <= p < ring.partitions]

    def save_ring(self) -> None:
        """Write the ring and the partitions still being received beside the store (atomic
        rename; not fsynced: losing it costs a restart its head start, nothing more)."""
        ring = self.view.ring
        if ring is None:
            return
        path = self._ring_path()
        tmp = path.with_name(path.name + ".tmp")
        state = {"ring": ring.to_dict(), "receiving": self.receiving_now()}
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as error:
            log.warning("%s: cannot save the ring to %s: %s", self.cell_name, path, error)

    def on_stop(self) -> None:
        self._publish(each_key(ROLE), [Symbol("shard-leave"), Keyword("node"), self.node_name,
                                       Keyword("shard"), self.me,
                                       Keyword("incarnation"), self._incarnation()])
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self.store is not None:
            self.store.close()

    def on_receive(self, message: Any) -> Any:
        if type(message) is _Resume:
            try:
                message.action(*message.args)
            except Exception as error:  # a continuation's bug must not kill the cell
                log_failure(log, error, "%s: continuation %s failed", self.cell_name,
                            getattr(message.action, "__name__", message.action))
            return None
        return super().on_receive(message)

    # -- continuations and sending ----------------------------------------------------------

    def later(self, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` on the cell's own thread, after what its mailbox holds now."""
        try:
            self.actor_ref.tell(_Resume(action, args))
        except pykka.ActorDeadError:
            pass  # stopped meanwhile: nothing is waiting for it

    def when_durable(self, records: list[Record], then: Callable[[int], None], *,
                     source: int | None = None) -> None:
        """Apply replicated ``records`` (idempotent); ``then(failures)`` once all are durable.

        Every record a peer sends passes here (writes, read repair, anti-entropy, transfers,
        drops), so this is where the cluster's retention rule is applied: a record the next
        compaction would drop, given what the store holds, is skipped (not a failure), and
        ``source``, the shard that sent it, hears it has versions to compact
        (``on_obsolete``). One call to the store for the whole list and one call-back (a
        transfer's answer holds hundreds of records: per record, the call-backs alone cost
        more than the write).
        """
        store = self.store
        keep = self.retention_now()
        if store is not None and keep is not None and records:
            kept = store.retained(records, keep)
            if len(kept) < len(records):
                self.count("retention_skipped", len(records) - len(kept))
                applied = {r.digest for r in kept}
                self.on_obsolete(source, [r for r in records if r.digest not in applied])
                records = kept
        if store is None or not records:
            then(len(records) if store is None else 0)
            return

        def settled(failed: int, error: BaseException | None) -> None:
            if failed:
                log.warning("%s: %d of %d records not applied: %s", self.cell_name, failed,
                            len(records), error)
            self.later(then, failed)

        store.apply_many_nowait(records, settled)

    def send_to(self, shard: int, expr: list[Any]) -> bool:
        """Send ``expr`` to the cell of live ``shard``; an unroutable copy marks it gone."""
        cell = self.peers.cell_of(shard)
        if cell is None:
            return False
        self._publish(cell_key(cell), expr,
                      on_return=lambda envelope, reason: self.later(self._unreachable, shard))
        return True

    def _publish(self, target: str, expr: Any, *, reply_to: str | None = None,
                 on_return: Callable[[Any, str], None] | None = None,
                 correlation_id: str | None = None) -> None:
        """Fire and forget: no listener is fine; a closed transport (a killed node), or a
        cell alone without an outbox, sends nothing."""
        try:
            self.cell_send(target, expr, reply_to=reply_to, on_return=on_return or _ignore_return,
                           correlation_id=correlation_id)
        except CellframeError as error:
            log.debug("%s: not sent to %s: %s", self.cell_name, target, error)

    def reply(self, reply_to: str | None, expr: list[Any], request: Any = None) -> None:
        """Call back ``reply_to`` with ``expr``, correlated to ``request``: the id of the
        request it answers (the request message's own id unless its sender named one)."""
        if reply_to:
            self._publish(reply_to, expr,
                          correlation_id=request if isinstance(request, str) else None)

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def _incarnation(self) -> int:
        return self.cell_host.incarnation

    def _unreachable(self, shard: int) -> None:
        if self.peers.unreachable(shard):
            log.info("%s: shard %s is unreachable; dropped until it says hello", self.cell_name,
                     shard)

    # -- peers ------------------------------------------------------------------------------

    def _hello(self, *, reply: bool = False, to: str | None = None) -> None:
        self.last_hello = time.monotonic()
        if self.store is None:
            return  # a cell that cannot store stays out of the ring
        ring = self.view.ring
        expr = [Symbol("shard-hello"), Keyword("node"), self.node_name,
                Keyword("cell"), self.cell_name, Keyword("shard"), self.me,
                Keyword("incarnation"), self._incarnation(), Keyword("reply"), reply]
        if ring is not None:
            expr += [Keyword("ring-version"), ring.version, Keyword("ring-digest"),
                     self.view.digest, Keyword("ring-members"), quoted(list(ring.members))]
        expr += [Keyword("receiving"), quoted(self.receiving_now())]
        self._publish(to or each_key(ROLE), expr)

    @transition("shard-hello")
    def shard_hello(self, node: str, cell: str, shard: int, incarnation: int = 0,
                    reply: bool = False, ring_version: int | None = None,
                    ring_digest: str | None = None, ring_members: Any = None,
                    receiving: Any = None, **extra: Any) -> None:
        if node == self.node_name or not _names(node, cell) or not _int(shard, incarnation):
            return
        if isinstance(receiving, list):
            self.peer_receiving[shard] = frozenset(p for p in receiving if _int(p))
        if self.peers.hear(node, cell, shard, incarnation, time.monotonic()) or reply:
            self._hello(to=cell_key(cell))
        if isinstance(ring_version, int) and isinstance(ring_digest, str) and \
                isinstance(ring_members, list):
            self.peer_rings[shard] = (ring_version, ring_digest)
            self.peer_ring_sizes[shard] = len(set(ring_members))
            if self.view.should_adopt(ring_version, ring_digest, ring_members):
                self._ask_ring(cell, ring_version, ring_digest)

    def _ask_ring(self, cell: str, version: int, digest: str) -> None:
        now = time.monotonic()
        if now - self.asked_ring.get((version, digest), -1e9) < 1.0:
            return
        if len(self.asked_ring) > 64:
            self.asked_ring.clear()
        self.asked_ring[(version, digest)] = now
        self._publish(cell_key(cell), [Symbol("ring-please"), Keyword("peer"), self.cell_name])

    @transition("ring-please")
    def ring_please(self, peer: str, **extra: Any) -> None:
        ring = self.view.ring
        if ring is None or not _names(peer):
            return
        self._publish(cell_key(peer), [
            Symbol("ring-table"), Keyword("version"), ring.version,
            Keyword("replicas"), ring.replicas, Keyword("owners"),
            quoted([list(ring.owners(p)) for p in range(ring.partitions)])])

    @transition("ring-table")
    def ring_table(self, version: int, replicas: int, owners: Any, **extra: Any) -> None:
        try:
            ring = Ring.from_dict({"version": version, "replicas": replicas, "owners": owners})
        except ClusterError as error:
            log.warning("%s: refused a ring table: %s", self.cell_name, error)
            return
        if ring.partitions != self.config.partitions:
            log.error("%s: a peer's ring has %s partitions, ours %s", self.cell_name,
                      ring.partitions, self.config.partitions)
            return
        if self.view.should_adopt(ring.version, ring.digest(), ring.members):
            self.install(ring, adopted=True)

    @transition("shard-leave")
    def shard_leave(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        if isinstance(node, str) and node != self.node_name and _int(incarnation):
            self.peers.down(node, incarnation)

    @transition("member-down")
    def member_down(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        if isinstance(node, str) and node != self.node_name and _int(incarnation):
            self.peers.down(node, incarnation)

    @transition("member-leave")
    def member_leave(self, node: str, incarnation: int = 0, **extra: Any) -> None:
        self.member_down(node, incarnation)

    # -- the ring ---------------------------------------------------------------------------

    def install(self, ring: Ring, *, adopted: bool = False, alone: bool = False) -> None:
        """Make ``ring`` current and start what the move asks of this cell (``alone``: a
        table it built without hearing any peer, see ``ringview``)."""
        afresh = adopted and self.view.alone  # a peer's table replaces one built alone
        first = self.view.ring is None or afresh
        plan = self.view.install(ring, time.monotonic(), alone=alone, afresh=afresh)
        log.info("%s: ring v%s with shards %s (%d transfers)", self.cell_name, ring.version,
                 list(ring.members), len(plan))
        self.count("ring_changes")
        if first and adopted:
            # Its members are heard before it is rebalanced, as a saved table's are: a cell
            # that has heard one peer so far would rebalance the others out of it, and each
            # hello heard after that would raise the version of a table that outranks the
            # cluster's (a joiner under load: every cell moved to a layout that joiner made).
            self.adopted_at = time.monotonic()
        self.on_ring_change(plan, first=first and adopted)
        self.save_ring()
        self._hello()

    def _track_ring(self, now: float) -> None:
        if self.store is None:
            return
        live = self.peers.shards()
        ring = self.view.ring
        if ring is None:
            if self._may_build(now):
                # Alone: it heard no peer, and it holds nothing (a node restarted with its
                # records and no saved table is a one-node cluster's table, not a stand-in).
                holds = self.store is not None and bool(self.store.partitions_held())
                self.install(self.view.successor(live), alone=live == {self.me} and not holds)
        elif self._still_alone() and any(self.peer_ring_sizes.get(s, 0) > 1
                                         for s in self.peers.by_shard):
            return  # a peer's table (asked for on its hello) replaces ours: not rebalanced
        else:
            heard = set(ring.members) <= live
            if self.restored and (heard or now - self.started >= self.config.restart_grace):
                self.restored = False  # every member of the saved ring heard (or given up)
            if self.adopted_at is not None and (
                    heard or now - self.adopted_at >= self.config.restart_grace):
                self.adopted_at = None  # every member of the peer's table heard (or given up)
            if set(ring.members) != live and not self.restored and self.adopted_at is None:
                self.install(self.view.successor(live))

    def _may_build(self, now: float) -> bool:
        """May a cell with no table build one of its own?

        A table of its own would make it owner of partitions whose data it never received,
        so it starts from a peer's (asked for on the first hello) whenever a live peer has
        one, and waits for every shard node its membership view lists as alive to say hello.
        Only when none of them has a table (a cold start of the cluster) does it build one,
        after ``ring_wait`` to hear them all: the same members give the same table
        everywhere. A starting node's membership view is empty for a heartbeat or two, hence
        the wait even when it sees no one (membership warms up the same way).
        """
        waited = now - self.started
        if waited < self.config.ring_wait:
            return False
        if any(s in self.peer_rings for s in self.peers.by_shard):
            return False
        unheard = self._shard_nodes() - {p.node for p in self.peers.by_shard.values()}
        return not unheard or waited > self.config.ring_wait_max

    def _still_alone(self) -> bool:
        """Does this cell hold a table it built alone, and no write it took under it? A write
        it coordinated as that table's only owner makes it a one-node cluster's table, which
        a newcomer's must not replace (``_coordinate_write``). Records that reach it from
        peers (replicated, repaired, transferred) do not: the peers' table holds them, and a
        joiner that stopped yielding on the first of them rebalanced its own table again."""
        return self.view.alone

    def _shard_nodes(self) -> set[str]:
        """Other nodes the node's membership view lists as alive and playing a shard."""
        nodes = set()
        for cell in self.cell_host.status()["cells"]:
            for member in cell.get("members") or ():
                if member.get("role") == ROLE and member.get("status") in ("alive", "suspect"):
                    nodes.add(member["name"])
        return nodes - {self.node_name}

    def live(self, shard: int) -> bool:
        return self.peers.live(shard)

    def is_receiving(self, partition: int) -> bool:
        """Is this cell still receiving ``partition`` (the transfer part says)?"""
        return False

    def pull_partition(self, partition: int, sources: tuple[int, ...]) -> None:
        """Receive ``partition`` from ``sources`` (the transfer part does it)."""

    def receiving_now(self) -> list[int]:
        """The partitions this cell is receiving (the transfer part says)."""
        return []

    def on_restored(self, receiving: list[int]) -> None:
        """A saved ring was loaded; ``receiving`` were still on their way (the transfer part
        resumes them)."""

    def forget_transfers(self, partitions: set[int]) -> None:
        """Durably forget where transfers of ``partitions`` to this cell stopped, before they
        are dropped (the transfer part does it)."""

    # -- the tick ---------------------------------------------------------------------------

    @transition("tick")
    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_hello >= self.config.announce_interval:
            self._hello()
        for shard in self.peers.expire(now, self.config.peer_timeout):
            log.info("%s: shard %s silent for %s s; dropped", self.cell_name, shard,
                     self.config.peer_timeout)
        self._track_ring(now)
        self.view.settle(now, self._anyone_receiving, 2 * self.config.announce_interval)
        self.on_tick(now)

    def _anyone_receiving(self, partition: int) -> bool:
        """Is a live owner of ``partition`` (this cell included) still receiving it?"""
        if self.is_receiving(partition):
            return True
        return any(partition in self.peer_receiving.get(s, ()) for s in self.view.owners(partition)
                   if s != self.me and self.live(s))

    # Hooks the protocol's parts extend (cooperatively: call super()).

    def retention_now(self) -> Retention | None:
        """The cluster's retention rule as it applies now (None: keep every version)."""
        rule = self.config.retention
        return None if rule is None else rule.at(now_micros())

    def on_obsolete(self, source: int | None, records: list[Record]) -> None:
        """``source`` sent ``records`` that retention drops here (the compaction part tells
        it to compact)."""

    def on_ring_change(self, plan: list[Transfer], *, first: bool) -> None:
        """The ring changed; ``plan`` lists the copies the move needs."""

    def on_tick(self, now: float) -> None:
        """Periodic work: time-outs, anti-entropy rounds, transfers."""

    # -- status -----------------------------------------------------------------------------

    def store_summary(self) -> dict[str, Any]:
        """The ``store`` key of the status: what ``status`` and ``metrics`` show."""
        store = self.store
        stats = store.stats() if store is not None else {"records": 0, "bytes": 0}
        return {"records": stats["records"], "bytes": stats["bytes"],
                "partitions": len(self.view.mine()), "open": store is not None}

    def cell_snapshot(self) -> dict[str, Any]:
        snapshot = super().cell_snapshot()
        snapshot["store"] = self.store_summary()
        snapshot["shard"] = {"id": self.me, "ring": self.view.summary(),
                             "peers": sorted(_copy(self.peers.shards)),
                             "stats": _copy(lambda: dict(self.stats))}
        return snapshot

    @transition("shard-status")
    def shard_status(self) -> None:
        """Reply ``(shard-status-is :node N :shard S :store (...) :ring (...))``."""
        from ..language.plist import to_plist

        ring = self.view.summary()
        request = self.cell_message.id if self.cell_message is not None else None
        self.cell_reply([Symbol("shard-status-is"), Keyword("request"), request,
                         Keyword("node"), self.node_name,
                         Keyword("cell"), self.cell_name, Keyword("shard"), self.me,
                         Keyword("store"), quoted(to_plist(self.store_summary())),
                         Keyword("ring"), quoted(to_plist(ring)),
                         Keyword("stats"), quoted(to_plist(self.stats)),
                         Keyword("peers"), quoted(sorted(self.peers.shards()))])


def _copy(read: Callable[[], Any]) -> Any:
    """``read()`` of state the cell's thread may change meanwhile (status is read from other
    threads): a dict resized under the copy is simply read again."""
    while True:
        try:
            return read()
        except RuntimeError:
            continue


def _names(*values: Any) -> bool:
    return all(isinstance(v, str) and v for v in values)


def _int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


