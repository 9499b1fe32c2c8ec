"""Adversarial tests of the replay check across a role's instances (``cellframe.node.replays``,
``cellframe.node.siblings``): what a key holder's odd message ids, a silent or busy sibling, a
node key of another role, and a node that changes role, stops or loses its connection while
it holds role messages do to it, on the real broker; and the pause fence's held deliveries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cellframe import Node
from cellframe.cell.fence import PauseFence
from cellframe.language.printer import write
from cellframe.language.symbols import Keyword, Symbol
from cellframe.node.replays import replay_entry
from cellframe.roles.registry import RoleRegistry
from cellframe.testing import wait_for
from cellframe.testing.amqp import raw_channel
from cellframe.transports._amqp_wire import to_amqp
from cellframe.transports.memory import MemoryBroker
from cellframe.wire.envelope import Envelope, envelope_for
from cellframe.wire.keys import Key, dump_keys, new_key
from cellframe.wire.routing import each_key
from cellframe.wire.signing import Signer
from tests.amqp_support import close_connections
from tests.node_support import cell_total, registry
from tests.test_trust_broker import SEEING, Gullible, Trust
from tests.test_trust_broker import trust as trust_fixture

trust = trust_fixture  # two signed nodes of role tally, a key file, dead letters


def start_node(trust: Trust, name: str, role: str, connection: str | None = None,
               **options: Any) -> Node:
    """``Trust.start_node`` with a registry of two roles (``counter``, ``other``), so that the
    node may change role; each node sees the others by membership. ``connection``: the name
    its broker connection carries (``close_connections`` cuts it)."""
    key = new_key(name, kind="node", node=name)
    trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, key]))
    assert trust.keys.reload()
    signer = Signer(key, keyring=trust.keys, exchange=trust.names.exchange)
    registry = RoleRegistry({"counter": [Gullible], "other": [Gullible]})
    transport = trust.names.connect(**({} if connection is None else {"name": connection}))
    trust.nodes[name] = Node(name, transport=transport, signer=signer, role=role,
                             registry=registry, diagnostic=True,
                             queue_prefix=trust.names.queue_prefix, watch_config=False,
                             system_cells=(SEEING,), **options).start()
    return trust.nodes[name]


def role_key(trust: Trust) -> Key:
    """A client key that may send ``(add ...)`` to the ``counter`` role, trusted now."""
    key = new_key("ops-role", ["role:counter add"])
    trust.keys.paths[0].write_text(dump_keys([*trust.keys.keyring, key]))
    assert trust.keys.reload()
    return key


def publish_adds(trust: Trust, key: Key, ids: list[str]) -> None:
    """An ``(add 1)`` to the ``counter`` role for each message id, signed with ``key``."""
    signer = Signer(key, exchange=trust.names.exchange)
    with raw_channel(trust.names.url) as channel:
        for message_id in ids:
            signed = signer.sign(Envelope(b"(add 1)", message_id=message_id), "role.counter")
            channel.basic_publish(trust.names.exchange, "role.counter", signed.body,
                                  to_amqp(signed, persistent=False))


def seeing_each_other(nodes: list[Node]) -> None:
    wait_for(lambda: all(node.role_siblings() for node in nodes), 30,
             what="each instance to see the other alive",
             show=lambda: {node.name: node.role_siblings() for node in nodes})


@pytest.mark.amqp
def test_questions_about_messages_with_escaped_ids_fit_a_message_and_are_answered(trust) -> None:
    """Message ids of 1,000 control characters (printed ``\\u0001``: six bytes each) from a
    key that may send to the role. The questions about them were cut by characters, not by
    the bytes printed: a batch of them was larger than a node takes (64 KB), its sibling
    refused it whole, and every message in it waited out the give-up and was then applied
    with only the gossip to keep a replay out."""
    nodes = [start_node(trust, name, "counter", sibling_timeout=1.0) for name in ("r-01", "r-02")]
    seeing_each_other(nodes)
    publish_adds(trust, role_key(trust), [f"{n:03}" + "\x01" * 1000 for n in range(40)])

    def state() -> dict[str, Any]:
        return {node.name: (cell_total(node, node.name), node.replay_check.counts,
                            dict(node.counters.refused)) for node in nodes}

    wait_for(lambda: sum(cell_total(node, node.name) for node in nodes) == 40, 30,
             what="the 40 adds applied", show=state)
    assert all(node.replay_check.counts["gave_up"] == 0 for node in nodes), state()
    assert all("oversized" not in node.counters.refused for node in nodes), state()


def silent(node: Node) -> None:
    """``node`` no longer answers the replay check, as an older node without the verb, or a
    stuck one (its questions to others still go)."""
    node.answer_replays = lambda asker, entries: None  # type: ignore[method-assign]


def _holding_with_a_silent_sibling(trust: Trust, *, sibling_timeout: float,
                                   connection: str | None = None, all_placed: bool = False,
                                   ) -> tuple[Node, Node]:
    """r-01 and r-02 of role counter, r-02 silent: eight adds sent to the role, and r-01
    holding at least one of them (it waits for r-02's answer). ``all_placed``: and r-02 has
    applied all the others. ``connection``: the name of r-01's broker connection."""
    first = start_node(trust, "r-01", "counter", connection=connection,
                       sibling_timeout=sibling_timeout)
    second = start_node(trust, "r-02", "counter", sibling_timeout=sibling_timeout)
    seeing_each_other([first, second])
    silent(second)
    publish_adds(trust, role_key(trust), [f"held-{n}" for n in range(8)])
    if all_placed:
        wait_for(lambda: cell_total(second, "r-02") + first.replay_check.holding() == 8, 10,
                 what="r-02 to apply its adds and r-01 to hold the others",
                 show=lambda: (cell_total(second, "r-02"), first.replay_check.counts))
    wait_for(lambda: first.replay_check.holding() >= 1, 10,
             what="r-01 to hold a role message", show=lambda: first.replay_check.counts)
    return first, second


@pytest.mark.amqp
@pytest.mark.parametrize("roles", [["other"], ["other", "counter"]],
                         ids=["to-another-role", "and-back"])
def test_a_message_held_when_its_node_changes_role_is_applied_once_by_its_own_role(
        trust, roles: list[str]) -> None:
    """r-01 holds role messages while its silent sibling r-02 does not answer, and changes
    role meanwhile: closing the old role's consumer gives them back to the old role, where
    r-02 applies them. Decided later, they were handed to the new role's cells as well:
    applied twice, once by a role they were never meant for; or, if r-01 came back to the
    role meanwhile, by the role's new cells on r-01."""
    first, second = _holding_with_a_silent_sibling(trust, sibling_timeout=0.5)
    for role in roles:
        assert first.differentiate(role)
    wait_for(lambda: cell_total(second, "r-02") == 8, 20, what="r-02 to apply all 8 adds",
             show=lambda: (cell_total(second, "r-02"), second.counters.refused))
    wait_for(lambda: first.replay_check.holding() == 0, 10,
             what="r-01 to decide what it held", show=lambda: first.replay_check.counts)
    assert cell_total(first, "r-01") == 0  # the new role's cell, or the role's new one
    assert cell_total(second, "r-02") == 8


@pytest.mark.amqp
def test_messages_held_when_their_node_stops_go_back_to_the_role_and_are_applied_once(
        trust) -> None:
    """r-01 stops while it holds role messages its silent sibling never answered about: they
    are neither applied nor acknowledged there, and the broker gives them to r-02."""
    first, second = _holding_with_a_silent_sibling(trust, sibling_timeout=2.0)
    cell = first.cells()["r-01"]
    first.stop()
    assert cell.total == 0  # held, never applied
    wait_for(lambda: cell_total(second, "r-02") == 8, 20, what="r-02 to apply all 8 adds",
             show=lambda: (cell_total(second, "r-02"), second.counters.refused))


@pytest.mark.amqp
def test_a_sibling_that_answers_busy_for_ever_holds_a_role_message_for_its_give_up_at_most(
        trust) -> None:
    """r-02 answers every question ``busy`` (as if it always held a copy that goes first): each
    of r-01's messages is asked again soon, and applied once the give-up time has passed
    (four sibling timeouts: 2 s), not held for good."""
    first = start_node(trust, "r-01", "counter", sibling_timeout=0.5)
    second = start_node(trust, "r-02", "counter", sibling_timeout=0.5)
    seeing_each_other([first, second])

    def busy(asker: str, entries: list[Any]) -> None:
        second._send_quietly(f"node.{asker}", [
            Symbol("admitted-answers"), Keyword("node"), "r-02",
            Keyword("answers"), [Symbol("quote"), [[*entry, "busy"] for entry in entries]]])

    second.answer_replays = busy  # type: ignore[method-assign]
    publish_adds(trust, role_key(trust), [f"busy-{n}" for n in range(8)])
    wait_for(lambda: cell_total(first, "r-01") + cell_total(second, "r-02") == 8, 10,
             what="all 8 adds applied once, r-01's once r-02 was given up on",
             show=lambda: (cell_total(first, "r-01"), first.replay_check.counts,
                           first.replay_check.waited))
    counts = first.replay_check.counts
    assert counts["held"] == counts["gave_up"] == cell_total(first, "r-01") > 0, counts
    assert counts["asked_again"] >= counts["held"]  # asked again soon, not just waited
    assert first.replay_check.waited["max"] < 3.0, first.replay_check.waited


@pytest.mark.amqp
def test_a_node_key_of_another_role_cannot_make_a_roles_messages_refused_as_replays(
        trust) -> None:
    """a-01 plays tally; with its node key, it tells r-01 (counter) that it admitted a message
    a client is about to send to the counter role (message ids are a per-process prefix and a
    counter: one seen, the next ones known). r-01 took it into its replay cache, so the
    message was refused as a replay there, and, asked, r-01 answered r-02 ``applied``: refused
    on both, never applied. Replay news is taken from the instances of the node's own role."""
    nodes = [start_node(trust, name, "counter") for name in ("r-01", "r-02")]
    seeing_each_other(nodes)
    key = role_key(trust)
    expires = time.time() + 60
    trust.publish_signed(trust.node_key("a-01"), "node.r-01", write([
        Symbol("replays-seen"), Keyword("by"), "a-01", Keyword("entries"),
        [Symbol("quote"), [[key.id, f"victim-{n}", "role.counter", "role", expires]
                           for n in range(4)]]]))
    trust.answers_status("r-01")  # after the news, on the same queue: it was handled
    publish_adds(trust, key, [f"victim-{n}" for n in range(4)])

    def state() -> dict[str, Any]:
        return {node.name: (cell_total(node, node.name), dict(node.counters.refused))
                for node in nodes}

    wait_for(lambda: sum(cell_total(node, node.name) for node in nodes)
             + sum(node.counters.refused.get("replayed", 0) for node in nodes) >= 4, 10,
             what="the 4 adds applied or refused", show=state)
    assert sum(cell_total(node, node.name) for node in nodes) == 4, state()


@pytest.mark.amqp
def test_the_last_news_of_an_instance_that_left_is_still_taken(trust) -> None:
    """What a stopping node tells last may come after membership heard it leave: the news of
    a node that played the role is taken whatever its standing now, a stranger's is not."""
    first, second = (start_node(trust, name, "counter") for name in ("r-01", "r-02"))
    seeing_each_other([first, second])
    second.stop()
    wait_for(lambda: not first.role_siblings(), 10, what="r-01 to see r-02 leave")
    key, expires = role_key(trust), time.time() + 60
    for teller in ("r-02", "a-01"):  # left the role; never played it
        trust.publish_signed(trust.node_key(teller), "node.r-01", write([
            Symbol("replays-seen"), Keyword("by"), teller, Keyword("entries"),
            [Symbol("quote"), [[key.id, f"from-{teller}", "role.counter", "role", expires]]]]))
    trust.answers_status("r-01")  # after the news, on the same queue: it was handled
    assert (first.replay_gossip.heard_entries, first.replay_gossip.strangers) == (1, 1)


@pytest.mark.amqp
def test_a_sibling_that_leaves_while_asked_is_no_longer_waited_for(trust) -> None:
    """r-01 holds role messages its silent sibling r-02 was asked about; r-02 then stops (it
    leaves the membership): r-01 applies them at once, not after the give-up (8 s)."""
    first, second = _holding_with_a_silent_sibling(trust, sibling_timeout=2.0, all_placed=True)
    held = first.replay_check.holding()
    applied_there = cell_total(second, "r-02")
    second.stop()
    wait_for(lambda: cell_total(first, "r-01") == held, 10,
             what="r-01 to apply what it held once r-02 left",
             show=lambda: {"held": held, "applied by r-02": applied_there,
                           "applied by r-01": cell_total(first, "r-01"),
                           "replay check": first.replay_check.counts,
                           "redelivered": first.siblings.counts})
    assert first.replay_check.counts["gave_up"] == 0
    assert first.replay_check.waited["max"] < 6.0, first.replay_check.waited


@pytest.mark.amqp
def test_messages_held_when_their_connection_is_cut_are_not_applied_there_as_well(
        trust) -> None:
    """r-01 holds role messages (its silent sibling r-02 does not answer) when the broker
    cuts its connection: the broker requeues them, and r-02 applies them. Decided later (the
    give-up), they were applied on r-01 as well: the node had the delivery, not the message."""
    cut = f"cf-cut-{trust.names.token}"
    first, second = _holding_with_a_silent_sibling(trust, sibling_timeout=0.5, connection=cut,
                                                   all_placed=True)
    close_connections(cut)
    wait_for(lambda: cell_total(second, "r-02") == 8, 20,
             what="r-02 to apply the adds r-01 held, given back by the broker",
             show=lambda: (cell_total(second, "r-02"), cell_total(first, "r-01")))
    wait_for(lambda: first.replay_check.holding() == 0, 10,
             what="r-01 to decide what it held", show=lambda: first.replay_check.counts)
    assert cell_total(first, "r-01") + cell_total(second, "r-02") == 8


@pytest.mark.amqp
def test_a_replay_after_the_instance_that_applied_it_stopped_is_refused(trust) -> None:
    """The instance that applied a role message stops before its next news (every 50 ms; made
    5 s here so that it surely does): what it admitted since its last news was never told, and
    a replay that then reached the other instance was applied there, with nobody left to ask.
    A stopping node tells what it has not told yet."""
    nodes = [start_node(trust, name, "counter") for name in ("r-01", "r-02")]
    seeing_each_other(nodes)
    for node in nodes:
        node.replay_gossip.interval = 5.0
    signed = Signer(role_key(trust), exchange=trust.names.exchange).sign(
        Envelope(b"(add 1)", message_id="once"), "role.counter")
    properties = to_amqp(signed, persistent=False)
    trust.publish_raw("role.counter", signed.body, properties)
    wait_for(lambda: sum(cell_total(node, node.name) for node in nodes) == 1, 10,
             what="the add applied on one instance")
    applied = next(node for node in nodes if cell_total(node, node.name) == 1)
    other = next(node for node in nodes if node is not applied)
    heard = other.replay_gossip.heard_entries
    applied.stop()
    # The news and the replay reach the other instance by two queues: the news first, as it
    # would be any time after the stop but the first instant (else it is the gossip window).
    wait_for(lambda: other.replay_gossip.heard_entries > heard, 10,
             what=f"{applied.name}'s last news, told as it stopped, to reach {other.name}",
             show=lambda: (other.replay_gossip.heard_entries, other.replay_gossip.strangers))
    trust.publish_raw("role.counter", signed.body, properties)
    wait_for(lambda: cell_total(other, other.name) + other.counters.refused.get("replayed", 0)
             >= 1, 20, what=f"{other.name} to apply or refuse the replay",
             show=lambda: (other.replay_check.counts, dict(other.counters.refused)))
    assert cell_total(other, other.name) == 0


@pytest.mark.amqp
def test_news_from_a_silent_sibling_decides_the_copies_it_names_as_replays_at_once(trust) -> None:
    """r-01 holds role messages its sibling r-02 does not answer about (stopping, or slow).
    r-02's news then names them as admitted there: that is its answer, and they are refused
    as replays at once. Before, they waited for the give-up (8 s here) and were applied
    here as well: the news had only reached the replay cache, which a held copy had passed."""
    first, second = _holding_with_a_silent_sibling(trust, sibling_timeout=2.0)
    wait_for(lambda: cell_total(second, "r-02") + first.replay_check.holding() == 8, 10,
             what="r-02 to apply its adds and r-01 to hold the others",
             show=lambda: (cell_total(second, "r-02"), first.replay_check.counts))
    held = [replay_entry(i) for i in list(first.replay_check._held)]
    assert held
    expires = time.time() + 60
    second._send_quietly(each_key("counter"), [
        Symbol("replays-seen"), Keyword("by"), "r-02",
        Keyword("entries"), [Symbol("quote"), [[*entry, expires] for entry in held]]])
    wait_for(lambda: first.counters.refused.get("replayed", 0) == len(held), 5,
             what=f"r-01 to refuse the {len(held)} copies r-02's news named, before the give-up",
             show=lambda: (dict(first.counters.refused), first.replay_check.counts))
    assert cell_total(first, "r-01") == 0
    assert first.replay_check.counts["gave_up"] == 0


@pytest.mark.amqp
def test_a_node_key_cannot_ask_or_answer_the_replay_check_in_another_nodes_name(trust) -> None:
    """A forged answer in a sibling's name would let a replay through (``not-applied``) or
    refuse a genuine message (``applied``): the gate holds a node key to its own name."""
    b_key = trust.node_key("b-01")
    for text in ('(were-admitted :by "c-01" :entries \'(("k" "m" "role.tally")))',
                 '(admitted-answers :node "c-01" :answers \'(("k" "m" "role.tally" "applied")))',
                 '(admitted-answers :answers \'(("k" "m" "role.tally" "applied")))'):
        trust.publish_signed(b_key, "node.a-01", text)
    trust.wait_refused("not-allowed", 3)
    wait_for(lambda: len(trust.dead_reasons("node key 'b-01' speaks for 'b-01'")) == 3, 30,
             what="three dead letters naming b-01's key", show=lambda: trust.dead_reasons(""))
    assert trust.refused() == {"not-allowed": 3}
    trust.answers_status()


def test_a_delivery_held_behind_the_pause_fence_is_not_applied_once_the_broker_took_it_back(
) -> None:
    """A paused node holds new role deliveries until membership clears its fence; if its
    connection went meanwhile (a paused process misses its heartbeats), the broker requeued
    them for another instance, and clearing the fence handed them to the cells here as well."""
    broker = MemoryBroker()
    clock = [0.0]
    paused = Node("a-01", transport=broker.connect(), role="tally", registry=registry(),
                  watch_config=False).start()
    other = None
    try:
        paused.fence = PauseFence(1.0, clock=lambda: clock[0])
        wait_for(lambda: paused.fence is not None and paused.fence.beat() == 0, 10,
                 what="the fence beating")
        clock[0] = 5.0  # a pause of 5 s: the next delivery trips the fence and is held
        sender = broker.connect()
        sender.publish("role.tally", envelope_for([Symbol("add"), 1], sender="client"))
        wait_for(lambda: len(paused._held) == 1, 10, what="the delivery held behind the fence")
        generation = paused.fence.generation
        paused.transport.abort()  # its connection is gone: the broker takes the delivery back
        other = Node("b-01", transport=broker.connect(), role="tally", registry=registry(),
                     watch_config=False).start()
        wait_for(lambda: cell_total(other, "b-01") == 1, 10, what="b-01 to apply the add")
        paused.clear_fence(generation)
        cell = paused.cells()["a-01"]
        assert cell.actor_ref.proxy().total.get(timeout=10) == 0  # asked after what it was told
    finally:
        for node in (paused, other):
            if node is not None:
                node.stop()
