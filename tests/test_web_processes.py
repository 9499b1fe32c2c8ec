"""The web tier across real processes: cellframe nodes on RabbitMQ, web cells serving HTTP under
waitress, the proxy cell driving a real HAProxy, a bounded urllib3 load (tests/web_support.py).

SIGKILL of a web node under load: HAProxy stops sending it requests within 1 s, the spare
takes its place and serves within 3 s, and no request fails once the dead node is out. A
node whose app gets slow asks for a lower weight, and its share of HAProxy's requests falls
until it is fast again.
"""

from __future__ import annotations

import time

import pytest

from cellframe.testing import wait_for
from tests import web_apps
from tests.healing_support import NodeProcesses
from tests.web_support import HttpLoad, web_zone

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

WEBS = ["web-01", "web-02", "web-03"]


def servers(haproxy) -> dict[str, tuple[int, bool]]:
    return {name: (s.port, s.up) for name, s in haproxy.runtime().servers("web").items()}


@pytest.fixture
def web_nodes(amqp_url, haproxy_server, tmp_path, monkeypatch):
    slow_dir = tmp_path / "slow"  # tests/web_apps.py: a file per port slows that server
    slow_dir.mkdir()
    monkeypatch.setenv(web_apps.SLOW_DIR_VARIABLE, str(slow_dir))
    zone = web_zone(tmp_path / "web.zone", haproxy_server.socket_path, spares=1)
    procs = NodeProcesses(amqp_url, zone, tmp_path)
    try:
        for name in ["proxy-01", *WEBS, "spare-01"]:
            procs.start(name)
        wait_for(lambda: sorted(n for n, (_, up) in servers(haproxy_server).items() if up) == WEBS,
                 60, interval=0.05, what="the three web nodes up in HAProxy",
                 show=lambda: servers(haproxy_server))
        yield procs
    finally:
        procs.close()


def test_a_killed_web_node_leaves_haproxy_within_1s_and_the_spare_serves_within_3s(
        web_nodes, haproxy_server) -> None:
    load = HttpLoad(haproxy_server.url, threads=2, seconds=40, limit=40_000).start()
    try:
        killed_port = str(servers(haproxy_server)["web-01"][0])
        wait_for(lambda: load.served_by()[killed_port] >= 20, 10, what="web-01 serving under load",
                 show=load.served_by)
        killed = time.monotonic()
        web_nodes.kill("web-01")
        wait_for(lambda: not servers(haproxy_server).get("web-01", (0, False))[1], 1.0,
                 what="HAProxy to stop sending web-01 requests", show=lambda: servers(haproxy_server))
        out = time.monotonic()

        def spare_serves() -> bool:
            spare = servers(haproxy_server).get("spare-01")
            return bool(spare and spare[1] and load.served_by(since=killed)[str(spare[0])] > 0)

        wait_for(spare_serves, 3.0 - (time.monotonic() - killed), interval=0.02,
                 what="the spare in HAProxy, serving", show=lambda: servers(haproxy_server))
        replaced = time.monotonic()
        wait_for(lambda: sum(load.served_by(since=replaced).values()) >= 200, 10,
                 what="200 requests after the replacement", show=load.served_by)
    finally:
        load.stop()
    in_window = sum(1 for sent, port in load.results if killed <= sent < out and port is None)
    print(f"out of HAProxy {out - killed:.3f} s after the kill, spare serving after "
          f"{replaced - killed:.3f} s; {in_window} requests failed in the window")
    assert load.failures(since=out) == 0, load.served_by(since=out)
    assert load.served_by(since=out)[killed_port] == 0


def test_a_slow_web_process_gets_a_lower_weight_and_a_smaller_share_until_it_is_fast_again(
        web_nodes, haproxy_server) -> None:
    runtime = haproxy_server.runtime()

    def weight(name: str) -> int:
        return runtime.servers("web")[name].weight

    port = servers(haproxy_server)["web-02"][0]
    load = HttpLoad(haproxy_server.url, threads=3, seconds=40).start()
    try:
        web_apps.slow(port, 0.08)  # p95 80 ms against slow-ms=40
        wait_for(lambda: weight("web-02") < 10, 30, what="HAProxy's weight for web-02 to drop",
                 show=lambda: runtime.servers("web"))
        lowered = weight("web-02")
        before = runtime.request_totals("web")
        wait_for(lambda: sum(runtime.request_totals("web").values()) - sum(before.values()) >= 300,
                 15, what="300 requests through HAProxy", show=runtime.request_totals)
        after = runtime.request_totals("web")
        share = (after["web-02"] - before["web-02"]) / sum(after[n] - before[n] for n in after)
        web_apps.slow(port, 0)
        wait_for(lambda: weight("web-02") == 10, 30, what="web-02's weight back to 10",
                 show=lambda: runtime.servers("web"))
    finally:
        load.stop()
    print(f"web-02 weight {lowered}, share {share:.3f} (even: 0.333)")
    assert share <= (lowered + 1) / (lowered + 21), (share, lowered, before, after)
    assert load.failures() == 0
