"""The news a role's instances give each other of the signed messages their gates admitted
(``cellframe.node.replays``): what is told, what is taken, and what is refused."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cellframe import Node
from cellframe.config.resolvers import ZoneFileResolver
from cellframe.errors import ConfigError
from cellframe.language.plist import from_plist
from cellframe.language.printer import write
from cellframe.language.symbols import Keyword, Symbol
from cellframe.node.gate import MAX_MESSAGE_ID
from cellframe.node.node import MAX_MESSAGE_BYTES
from cellframe.node.replays import (
    MAX_ASKED,
    MAX_ENTRIES,
    Questions,
    ReplayGossip,
    _parts,
    message_budgets,
    replays_mode,
)
from cellframe.testing import wait_for
from cellframe.transports.memory import MemoryBroker
from cellframe.wire.replay import ReplayCache


def test_admitted_role_messages_are_told_to_the_role_in_batches() -> None:
    told: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def publish(target: str, expr: Any) -> None:
        with lock:
            told.append((target, from_plist(expr[1:])))

    gossip = ReplayGossip("a-01", ReplayCache(), publish, interval=0.01)
    try:
        expires = time.time() + 30
        for n in range(5):
            gossip.admitted(("ops-1", f"m{n}", "role.tally", "role"), expires)
        gossip.admitted(("ops-1", "w1", "role.web", "role"), expires)
        wait_for(lambda: gossip.told == 6, 10, what="six entries told", show=lambda: told)
    finally:
        gossip.close()
    by_target = {target: fields for target, fields in told}
    assert set(by_target) == {"each.tally", "each.web"}
    assert all(fields["by"] == "a-01" for fields in by_target.values())
    entries = by_target["each.tally"]["entries"][1]  # quoted: (quote (...))
    assert [e[1] for e in entries] == [f"m{n}" for n in range(5)]


def test_a_sibling_takes_the_news_into_its_cache_and_ignores_its_own_and_the_expired() -> None:
    cache = ReplayCache()
    gossip = ReplayGossip("b-01", cache, lambda target, expr: None)
    now = time.time()
    entries = [["ops-1", "m1", "role.tally", "role", now + 30],
               ["ops-1", "old", "role.tally", "role", now - 1]]
    assert gossip.heard("b-01", entries, now) == 0  # its own news
    assert gossip.heard("a-01", entries, now) == 1
    assert cache.seen(("ops-1", "m1", "role.tally", "role"), now + 30, now)  # a replay now
    assert not cache.seen(("ops-1", "old", "role.tally", "role"), now + 30, now)


@pytest.mark.parametrize("entries", [
    "not a list",
    [["ops-1", "m1", "role.tally", "role"]],  # no expiry
    [["ops-1", 5, "role.tally", "role", 1e12]],
    [["ops-1", "x" * 2000, "role.tally", "role", 1e12]],
    [["ops-1", "m1", "role.tally", "role", 1e12], ["ops-1", "m1", "role.tally", "role", "soon"]],
    [["k", "m", "role.t", "role", 1e12]] * (MAX_ENTRIES + 1),
])
def test_news_that_is_not_a_list_of_entries_is_refused_whole(entries: Any) -> None:
    cache = ReplayCache()
    with pytest.raises(ValueError):
        ReplayGossip("b-01", cache, lambda target, expr: None).heard("a-01", entries)
    assert len(cache) == 0


def test_questions_to_a_sibling_wait_for_the_batch_on_its_way_and_then_go_together() -> None:
    sent: list[tuple[str, list[Any]]] = []
    now = [0.0]
    questions = Questions(lambda sibling, batch: sent.append((sibling, batch)), patience=1.0,
                          clock=lambda: now[0])
    questions.ask("b-01", ("k", "m1", "role.tally"))
    questions.ask("b-01", ("k", "m2", "role.tally"))
    questions.ask("b-01", ("k", "m3", "role.tally"))
    questions.ask("c-01", ("k", "m1", "role.tally"))  # another sibling: not held back
    assert sent == [("b-01", [("k", "m1", "role.tally")]), ("c-01", [("k", "m1", "role.tally")])]
    questions.answered("b-01")
    assert sent[-1] == ("b-01", [("k", "m2", "role.tally"), ("k", "m3", "role.tally")])
    questions.answered("b-01")  # nothing waits: the next question goes at once
    questions.ask("b-01", ("k", "m4", "role.tally"))
    assert sent[-1] == ("b-01", [("k", "m4", "role.tally")])
    questions.ask("b-01", ("k", "m5", "role.tally"))
    assert len(sent) == 4  # held behind m4's batch ...
    now[0] = 1.5
    questions.ask("b-01", ("k", "m6", "role.tally"))  # ... until it waited past the patience
    assert sent[-1] == ("b-01", [("k", "m5", "role.tally"), ("k", "m6", "role.tally")])
    assert (questions.batches, questions.entries) == (5, 7)


def test_a_batch_of_questions_is_cut_to_fit_a_message() -> None:
    sent: list[list[Any]] = []
    questions = Questions(lambda sibling, batch: sent.append(batch), patience=1.0)
    questions.ask("b-01", ("k", "first", "role.tally"))
    for n in range(MAX_ASKED + 10):
        questions.ask("b-01", ("k", f"{n:0>500}", "role.tally"))
    while questions.entries < MAX_ASKED + 11:
        questions.answered("b-01")
    assert all(0 < len(batch) <= MAX_ASKED for batch in sent)
    assert all(sum(len(part) for asked in batch for part in asked) < 32 * 1024 for batch in sent)
    assert [asked[1] for batch in sent for asked in batch][1:] == \
        [f"{n:0>500}" for n in range(MAX_ASKED + 10)]


def test_the_replay_mode_is_read_from_dns_settings_and_a_bad_one_is_a_clear_error() -> None:
    assert replays_mode() == "ask"  # secure by default
    assert replays_mode({"replays.across-role": "gossip"}) == "gossip"
    assert replays_mode({"replays.across-role": "gossip"}, {"replays.across-role": " ask "}) \
        == "ask"  # the node's own record over the cluster's
    with pytest.raises(ConfigError, match="replays.across-role: ask or gossip"):
        replays_mode({"replays.across-role": "sometimes"})


def test_a_node_takes_its_replay_mode_from_dns_and_refuses_to_start_on_a_bad_one(
        tmp_path: Path) -> None:
    from tests.node_support import registry

    zone = tmp_path / "cluster.zone"
    zone.write_text("""$ORIGIN cluster.test.
$TTL 5
@        IN SOA ns.cluster.test. hostmaster.cluster.test. ( 1 60 30 600 5 )
         IN NS  ns
ns       IN A   127.0.0.1
_cluster IN TXT "tally=2" "replays.across-role=gossip"
_nodes   IN TXT "n1 n2 n3"
n1       IN TXT "role=tally"
n2       IN TXT "role=tally" "replays.across-role=ask"
n3       IN TXT "role=tally" "replays.across-role=often"
""", encoding="utf-8")
    broker = MemoryBroker()

    def node(name: str, **options: Any) -> Node:
        return Node(name, transport=broker.connect(), resolver=ZoneFileResolver(zone),
                    registry=registry(), watch_config=False, **options)

    started = [node("n1").start(), node("n2").start(), node("n3", replays_across_role="ask")]
    try:
        assert [n.replays_across_role for n in started] == ["gossip", "ask", "ask"]
        with pytest.raises(ConfigError, match="replays.across-role: ask or gossip, not 'often'"):
            node("n3").start()
    finally:
        for each in started:
            each.stop()


@pytest.mark.parametrize("limit", [MAX_MESSAGE_BYTES, 16 * 1024], ids=["64KB", "16KB"])
@pytest.mark.parametrize("odd", ["\x01", '"', "\u00e9", "\U0001f600"], ids=["control", "quote",
                                                                          "two-bytes", "four-bytes"])
def test_questions_and_news_about_ids_of_escaped_or_wide_characters_fit_a_message(
        odd: str, limit: int) -> None:
    """The cuts count the bytes a message takes, not characters (an id of 1,000 control
    characters is printed in 6,000 bytes), within what the nodes take (``max_message_bytes``):
    a batch larger than a node takes is refused whole."""
    asked_budget, news_budget = message_budgets(limit)
    ids = [f"{n:03}" + odd * (MAX_MESSAGE_ID - 3) for n in range(300)]
    sent: list[list[Any]] = []
    questions = Questions(lambda sibling, batch: sent.append(batch), patience=1.0,
                          budget=asked_budget)
    for message_id in ids:
        questions.ask("b-01", ("ops-1", message_id, "role.tally"))
    while questions.entries < len(ids):
        questions.answered("b-01")
    answers = [write([Symbol("admitted-answers"), Keyword("node"), "b-01", Keyword("answers"),
                      [Symbol("quote"), [[*asked, "not-applied"] for asked in batch]]])
               for batch in sent]
    news = [write([Symbol("replays-seen"), Keyword("by"), "a-01", Keyword("entries"),
                   [Symbol("quote"), part]])
            for part in _parts([["ops-1", i, "role.tally", "role", 1e12] for i in ids],
                               news_budget)]
    assert max(len(text.encode()) for text in answers + news) <= limit


@pytest.mark.parametrize("far", [1e300, 10**400], ids=["float", "400-digit-int"])
def test_news_of_an_expiry_past_any_messages_life_is_cut_to_it_and_does_not_pin_the_cache(
        far: Any) -> None:
    """The cache forgets entries in arrival order, each behind the ones before it: a sibling's
    entry said to expire in 1e300 s was never forgotten and kept every later one in the cache
    (full, then each admission evicting one: a shorter replay window), and a 400-digit int
    raised OverflowError half-way through the news. An admitted message lives ``max_age`` +
    ``max_skew`` at most (330 s), so no entry is kept longer."""
    cache = ReplayCache()
    gossip = ReplayGossip("b-01", cache, lambda target, expr: None)
    now = time.time()
    entries = [["ops-1", "far", "role.tally", "role", far],
               *[["ops-1", f"m{n}", "role.tally", "role", now + 30] for n in range(100)]]
    assert gossip.heard("a-01", entries, now) == 101
    later = now + 400
    assert not cache.seen(("ops-1", "new", "role.tally", "role"), later + 30, later)
    assert len(cache) == 1
