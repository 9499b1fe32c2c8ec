"""The web, keep-alive and log sump cells: fire and forget, send-only, receive-only."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pykka
import pytest

from cellframe.cell.outbox import RecordingOutbox
from cellframe.language.reader import read
from cellframe.language.symbols import Keyword, Symbol
from cellframe.roles import KeepAliveCell, LogSumpCell, WebCell
from cellframe.testing import wait_for
from cellframe.wire.envelope import Message
from tests.healing_support import SCENARIO_NODES, local_cluster, log_lines


def tick() -> Message:
    """A fresh ``(tick)`` (a new id each time: the cell drops a repeated id as a duplicate)."""
    return Message([Symbol("tick")])


def start(cls: type, name: str, **settings: str) -> tuple[pykka.ActorRef[Any], RecordingOutbox]:
    outbox = RecordingOutbox()
    return cls.start(name, outbox=outbox, settings=settings), outbox


def tell(ref: pykka.ActorRef[Any], text: str, reply_to: str | None = None, **kw: Any) -> None:
    ref.tell(Message(read(text), reply_to=reply_to, **kw))


def sent(outbox: RecordingOutbox, verb: str) -> list[Any]:
    return [s for s in outbox.sent if s.expr and s.expr[0] == Symbol(verb)]


def arg(expr: list[Any], key: str) -> Any:
    return expr[expr.index(Keyword(key)) + 1]


def counters(ref: pykka.ActorRef[Any]) -> dict[str, int]:
    return ref.proxy().cell_counters.get(timeout=5).as_dict()


# -- web ----------------------------------------------------------------------------------------


def test_a_web_cell_announces_itself_to_the_proxies_when_it_comes_online() -> None:
    ref, outbox = start(WebCell, "web-03", weight="5")
    try:
        (join,) = wait_for(lambda: sent(outbox, "join-pool"))
        assert join.target == "each.proxy"
        assert (arg(join.expr, "backend"), arg(join.expr, "weight")) == ("web-03", 5)
    finally:
        ref.stop()


def test_a_web_cell_serves_and_calls_back_the_proxy_and_the_requester() -> None:
    ref, outbox = start(WebCell, "web-01")
    try:
        tell(ref, '(serve :request "r7" :proxy "proxy-01")', reply_to="reply.client")
        wait_for(lambda: len(sent(outbox, "served")) == 2)
        assert sorted(s.target for s in sent(outbox, "served")) == ["cell.proxy-01", "reply.client"]
        assert all(arg(s.expr, "request") == "r7" for s in sent(outbox, "served"))
        assert all(arg(s.expr, "node") == "web-01" for s in sent(outbox, "served"))  # its name
    finally:
        ref.stop()


def test_a_loaded_web_cell_asks_for_a_lower_weight_and_later_for_its_weight_back() -> None:
    ref, outbox = start(WebCell, "web-01", weight="10", capacity="20", **{"load-window-ms": "300"})
    try:
        for i in range(40):  # 40 requests in well under 0.3 s: over 100/s against 20/s
            tell(ref, f'(serve :request "r{i}")')
        lower = wait_for(lambda: [s for s in sent(outbox, "set-weight")
                                  if arg(s.expr, "weight") < 10])
        assert lower[0].target == "each.proxy" and arg(lower[0].expr, "node") == "web-01"
        assert 1 <= arg(lower[-1].expr, "weight") <= 5

        def restored() -> bool:
            ref.tell(tick())  # the node's ticker does this; here the test drives it
            asked = sent(outbox, "set-weight")
            return bool(asked) and arg(asked[-1].expr, "weight") == 10

        wait_for(restored, 20, interval=0.05)
    finally:
        ref.stop()


def test_a_web_cell_reannounces_when_a_proxy_says_hello_and_leaves_on_stop() -> None:
    ref, outbox = start(WebCell, "web-01")
    wait_for(lambda: sent(outbox, "join-pool"))
    tell(ref, '(pool-hello :proxy "proxy-02")')
    wait_for(lambda: len(sent(outbox, "join-pool")) == 2)
    ref.stop()
    (leave,) = sent(outbox, "leave-pool")
    assert arg(leave.expr, "backend") == "web-01"


# -- keep-alive ---------------------------------------------------------------------------------


def test_a_keepalive_cell_only_sends_and_ignores_whatever_it_is_sent() -> None:
    ref, outbox = start(KeepAliveCell, "ka-01", **{"keepalive-target": "log.ka-01.debug"})
    try:
        ref.tell(tick())
        ref.tell(tick())
        tell(ref, "(ping)", reply_to="reply.client")
        tell(ref, '(keep-alive :node "other")', reply_to="reply.client")
        wait_for(lambda: counters(ref)["received"] == 4)
        pings = sent(outbox, "keep-alive")
        assert [s.target for s in pings] == ["log.ka-01.debug"] * 2
        assert [arg(s.expr, "seq") for s in pings] == [1, 2]
        assert not [s for s in outbox.sent if s.target == "reply.client"]  # answers nothing
        assert counters(ref)["ignored"] == 2
    finally:
        ref.stop()


# -- log sump -------------------------------------------------------------------------------------

LINE = re.compile(r"(?P<time>[^\t]+)\t(?P<sender>[^\t]+)\t(?P<id>[^\t]+)\t(?P<expr>[^\t\n]+)\Z")


@pytest.fixture
def sump(tmp_path):
    path = tmp_path / "sump.log"
    outbox = RecordingOutbox()
    ref = LogSumpCell.writing_to(path).start("logsump-01", outbox=outbox)
    yield ref, outbox, path
    ref.stop()


def test_the_log_sump_writes_one_documented_line_per_message(sump) -> None:
    ref, outbox, path = sump
    event = '(event :kind "down" :node "web-02" :time 1.5 :member "web-01")'
    ref.tell(Message(read(event), id="m1", sender="web-02"))
    wait_for(lambda: log_lines(path))
    (line,) = log_lines(path)
    fields = LINE.match(line)
    assert fields is not None
    assert datetime.fromisoformat(fields["time"]).tzinfo is not None
    assert (fields["sender"], fields["id"]) == ("web-02", "m1")
    assert read(fields["expr"]) == read(event)


@pytest.mark.parametrize("text", [
    "(teleport 1 2 3)", "(reply-please)", '("not a verb")', '(a (b (c "tab\there\nnewline")))',
    "42", "()", '(event :kind "x" :data (1 2 3))',
])
def test_the_log_sump_records_anything_without_error_or_reply(sump, text) -> None:
    ref, outbox, path = sump
    ref.tell(Message(read(text), reply_to="reply.client"))
    wait_for(lambda: log_lines(path))
    (line,) = log_lines(path)
    assert read(LINE.match(line)["expr"]) == read(text)  # type: ignore[index]
    assert outbox.sent == [] and outbox.dead_letters == []
    assert counters(ref)["errors"] == 0


def test_the_log_sump_writes_a_duplicate_delivery_once(sump) -> None:
    ref, _, path = sump
    for _ in range(3):
        ref.tell(Message(read("(event :kind \"x\")"), id="same"))
    ref.tell(Message(read("(event :kind \"y\")"), id="other"))
    wait_for(lambda: len(log_lines(path)) == 2)
    assert counters(ref)["duplicates"] == 2


def test_in_a_cluster_the_log_sump_hears_events_and_logs_of_every_node(tmp_path) -> None:
    with local_cluster(tmp_path, SCENARIO_NODES) as cluster:
        client = cluster.client()
        try:
            client.send("log.web-01.info", read('(log :message "hello")'), expect_reply=False)
        finally:
            client.close()
        lines = lambda: log_lines(cluster.log_path)  # noqa: E731
        wait_for(lambda: any('(log :message "hello")' in line for line in lines()))
        senders = {line.split("\t")[1] for line in lines() if ':kind "up"' in line}
        assert senders == set(SCENARIO_NODES)
