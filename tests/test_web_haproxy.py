"""Web cells behind a real HAProxy, in one process: real HTTP, the proxy cell driving HAProxy.

The nodes share an embedded broker here (the crash under SIGKILL, which needs processes, is
in test_web_processes.py); HAProxy, the HTTP servers (waitress) and the load (urllib3, a
bounded loop: tests/web_support.py) are real. HAProxy's own view is read from its runtime API
(``show servers state``, ``show stat``).
"""

from __future__ import annotations

import time

import pytest
import urllib3

from cellframe.roles import ProxyCell, WebCell
from cellframe.testing import wait_for
from tests import web_apps
from tests.web_support import HttpLoad, web_zone

pytestmark = pytest.mark.slow


def web_cells(cluster) -> dict[str, WebCell]:
    return {name: cell for name in cluster.holders("web")
            for cell in cluster.node(name).cells().values() if isinstance(cell, WebCell)}


def ports(cluster) -> dict[str, int]:
    return {name: cell.http.port for name, cell in web_cells(cluster).items()}


def haproxy_pool(haproxy) -> dict[str, tuple[int, int, bool]]:
    """HAProxy's servers: name -> (port, weight, up)."""
    return {name: (s.port, s.weight, s.up) for name, s in haproxy.runtime().servers("web").items()}


def matches_cluster(cluster, haproxy) -> bool:
    wanted = {name: (port, 10, True) for name, port in ports(cluster).items()}
    return bool(wanted) and haproxy_pool(haproxy) == wanted


@pytest.fixture
def web_cluster(local_cluster, haproxy_server, tmp_path):
    zone = web_zone(tmp_path / "web.zone", haproxy_server.socket_path)
    cluster = local_cluster(zone)
    yield cluster
    web_apps.SLOW.clear()


def test_three_web_cells_join_haproxy_and_its_servers_state_matches_the_cluster(
        web_cluster, haproxy_server) -> None:
    wait_for(lambda: len(web_cells(web_cluster)) == 3, 20, what="three web cells")
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 1.0,
             what="HAProxy's servers to be the cluster's web cells, up, at weight 10",
             show=lambda: (haproxy_pool(haproxy_server), ports(web_cluster)))
    http = urllib3.PoolManager()
    answered = {http.request("GET", haproxy_server.url + "/").data.decode() for _ in range(30)}
    assert answered == {str(port) for port in ports(web_cluster).values()}


def test_a_slow_web_cell_gets_a_lower_weight_and_fewer_requests_until_it_is_fast_again(
        web_cluster, haproxy_server) -> None:
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 20, what="the pool in HAProxy")
    runtime = haproxy_server.runtime()
    slow_port = ports(web_cluster)["web-01"]
    load = HttpLoad(haproxy_server.url, threads=3, seconds=30).start()
    try:
        web_apps.slow(slow_port, 0.08)  # p95 80 ms against slow-ms=40
        wait_for(lambda: haproxy_pool(haproxy_server)["web-01"][1] < 10, 20,
                 what="HAProxy's weight for the slow web-01 to drop",
                 show=lambda: haproxy_pool(haproxy_server))
        weight = haproxy_pool(haproxy_server)["web-01"][1]
        before = runtime.request_totals("web")
        wait_for(lambda: sum(runtime.request_totals("web").values()) - sum(before.values()) >= 300,
                 30, what="300 requests through HAProxy", show=runtime.request_totals)
        after = runtime.request_totals("web")
        share = (after["web-01"] - before["web-01"]) / sum(after[n] - before[n] for n in after)
        # Weighted round-robin gives web-01 weight/(weight+20) of the requests.
        assert share <= (weight + 1) / (weight + 21), (share, weight, before, after)
        web_apps.slow(slow_port, 0)
        wait_for(lambda: haproxy_pool(haproxy_server)["web-01"][1] == 10, 20,
                 what="web-01's weight back to 10 once fast", show=lambda: haproxy_pool(haproxy_server))
    finally:
        load.stop()
    assert load.failures() == 0, load.served_by()


def test_a_restarted_haproxy_is_rebuilt_from_the_cluster(web_cluster, haproxy_server) -> None:
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 20, what="the pool in HAProxy")
    assert "\n    server " not in haproxy_server.config.read_text()  # the cluster names them
    haproxy_server.restart()
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 2,
             what="the proxy cell to rebuild HAProxy's pool", show=lambda: haproxy_pool(haproxy_server))
    proxy: ProxyCell = web_cluster.proxy()
    assert proxy.haproxy is not None and proxy.haproxy.rebuilds >= 1


def test_an_unreachable_haproxy_is_retried_with_backoff_shown_in_status_and_nothing_is_lost(
        web_cluster, haproxy_server) -> None:
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 20, what="the pool in HAProxy")
    proxy = web_cluster.proxy()
    haproxy_server.stop()

    def status() -> dict:
        return web_cluster.node("proxy-01").status()["cells"][0].get("haproxy") or next(
            c["haproxy"] for c in web_cluster.node("proxy-01").status()["cells"] if "haproxy" in c)

    wait_for(lambda: status()["failures"] >= 3 and not status()["reachable"], 20,
             what="the proxy to report HAProxy unreachable after retries", show=status)
    assert status()["retry_in"] > 0 and "did not answer" in status()["error"]
    # Meanwhile web-02 gets slow (asked directly: HAProxy is down) and asks for a lower weight.
    slow_port = ports(web_cluster)["web-02"]
    web_apps.slow(slow_port, 0.08)
    # Kept slow (and so at its lower weight: an idle cell asks for its base weight) until the
    # restarted HAProxy has the weight.
    direct = HttpLoad(f"http://127.0.0.1:{slow_port}", threads=2, seconds=30).start()
    try:
        wait_for(lambda: proxy.haproxy.wanted["web-02"].weight < 10, 20,
                 what="the proxy to take web-02's lower weight while HAProxy is down",
                 show=lambda: proxy.haproxy.wanted)
        haproxy_server.start()
        wait_for(lambda: status()["reachable"], 30, what="the proxy to reach HAProxy again",
                 show=status)
        wait_for(lambda: haproxy_pool(haproxy_server).get("web-02", (0, 10, 0))[1] < 10, 2,
                 what="web-02's lower weight in the restarted HAProxy",
                 show=lambda: (haproxy_pool(haproxy_server), proxy.haproxy.wanted))
    finally:
        direct.stop()
    assert set(haproxy_pool(haproxy_server)) == {"web-01", "web-02", "web-03"}


def test_a_web_cell_stopped_cleanly_drains_with_no_failed_request(web_cluster, haproxy_server) -> None:
    wait_for(lambda: matches_cluster(web_cluster, haproxy_server), 20, what="the pool in HAProxy")
    port = str(ports(web_cluster)["web-03"])
    load = HttpLoad(haproxy_server.url, threads=3, seconds=30).start()
    try:
        wait_for(lambda: load.served_by()[port] >= 20, 20, what="web-03 serving under load",
                 show=load.served_by)
        web_cluster.stop_node("web-03")
        wait_for(lambda: "web-03" not in haproxy_pool(haproxy_server), 20,
                 what="web-03 deleted from HAProxy", show=lambda: haproxy_pool(haproxy_server))
        deleted = time.monotonic()
        wait_for(lambda: sum(load.served_by(since=deleted).values()) >= 100, 20,
                 what="100 requests after the deletion", show=load.served_by)
    finally:
        load.stop()
    assert load.failures() == 0, (load.served_by(), load.errors)
    assert load.served_by(since=deleted)[port] == 0


def test_a_spare_whose_app_cannot_be_imported_fails_its_claim_and_another_spare_takes_the_role(
        local_cluster, haproxy_server, tmp_path) -> None:
    zone = web_zone(tmp_path / "web.zone", haproxy_server.socket_path, web=1, spares=2)
    text = zone.read_text().replace('spare-01 IN TXT "app=tests.web_apps:app"',
                                    'spare-01 IN TXT "app=tests.no_such_module:app"')
    zone.write_text(text)
    cluster = local_cluster(zone)
    seen: list[tuple[str, dict]] = []
    for name in cluster.live():
        cluster.node(name).listeners.append(lambda kind, payload: seen.append((kind, payload)))
    wait_for(lambda: matches_cluster(cluster, haproxy_server), 20, what="web-01 in HAProxy")
    cluster.kill("web-01")

    def failed() -> list[dict]:
        return [p for k, p in list(seen) if k == "claim-failed" and p["node"] == "spare-01"]

    wait_for(failed, 30, what="spare-01's claim-failed event", show=lambda: seen[-10:])
    assert failed()[0]["role"] == "web"
    assert "cannot import tests.no_such_module" in failed()[0]["error"]
    wait_for(lambda: cluster.holders("web") == ["spare-02"], 30, what="spare-02 to take web",
             show=cluster.roles)
    wait_for(lambda: set(haproxy_pool(haproxy_server)) == {"spare-02"}, 20,
             what="spare-02 alone in HAProxy", show=lambda: haproxy_pool(haproxy_server))
    assert cluster.node("spare-01").role is None
    assert [k for k, p in seen if k == "differentiate-failed" and p["node"] == "spare-01"]


def test_sustained_load_brings_a_spare_into_web_and_idleness_returns_it_drained(
        local_cluster, haproxy_server, tmp_path) -> None:
    zone = web_zone(tmp_path / "web.zone", haproxy_server.socket_path, web=1, spares=1,
                    intent="web=1..2",
                    cluster_extra='"scale-out-load=0.6" "scale-in-load=0.2" '
                                  '"scale-out-hold-ms=1000" "scale-in-hold-ms=1500"',
                    web_extra='"http-threads=2"')
    cluster = local_cluster(zone)
    seen: list[tuple[str, dict]] = []
    for name in cluster.live():
        cluster.node(name).listeners.append(lambda kind, payload: seen.append((kind, payload)))
    wait_for(lambda: set(haproxy_pool(haproxy_server)) == {"web-01"}, 20, what="web-01 in HAProxy")
    web_apps.SLOW["*"] = 0.02  # 20 ms a request on two threads: six clients keep them busy
    load = HttpLoad(haproxy_server.url, threads=6, seconds=40).start()
    try:
        started = time.monotonic()
        wait_for(lambda: cluster.holders("web") == ["spare-01", "web-01"], 30,
                 what="the spare to take web under sustained load", show=cluster.roles)
        out = [p for k, p in seen if k == "scale-out"]
        assert out and out[0]["role"] == "web" and "above 0.6" in out[0]["reason"]
        wait_for(lambda: set(haproxy_pool(haproxy_server)) == {"web-01", "spare-01"}, 20,
                 what="spare-01 in HAProxy", show=lambda: haproxy_pool(haproxy_server))
        print(f"spare-01 in web {time.monotonic() - started:.2f} s after the load began")
    finally:
        load.stop()
    web_apps.SLOW.clear()
    trickle = HttpLoad(haproxy_server.url, threads=1, seconds=40, pause=0.05).start()
    try:
        wait_for(lambda: cluster.holders("web") == ["web-01"], 15,
                 what="the extra web cell to return to the spares", show=cluster.roles)
        wait_for(lambda: set(haproxy_pool(haproxy_server)) == {"web-01"}, 20,
                 what="spare-01 out of HAProxy", show=lambda: haproxy_pool(haproxy_server))
        after = len(trickle.results)
        wait_for(lambda: len(trickle.results) >= after + 10, 20, what="10 more requests")
    finally:
        trickle.stop()
    scale_in = [p for k, p in seen if k == "scale-in"]
    assert scale_in and "below 0.2" in scale_in[0]["reason"]
    assert trickle.failures() == 0 and load.failures() == 0, (trickle.errors, load.errors)
    assert cluster.node("spare-01").role is None


def test_the_web_page_runs_as_written() -> None:
    """docs/web.md: its zone parses, with a range for web and the settings named as the page
    says; its app is examples/web/hello.py, and serves under a web cell's server."""
    import json
    import re
    import sys
    from pathlib import Path

    import dns.zone

    from cellframe.config.txtconfig import ClusterIntent, parse_txt_records
    from cellframe.web import HttpServer, load_app

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "web.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", page, re.M | re.S)
    assert sorted({language for language, _ in blocks}) == ["dns", "python", "text"]
    [zone_text] = [text for language, text in blocks if language == "dns"]
    zone = dns.zone.from_text("@ IN SOA ns h 1 60 30 600 5\n@ IN NS ns\n" + zone_text,
                              origin="cluster.test.", check_origin=False)
    records = [rdata.strings for rdata in zone.find_rdataset("_cluster", "TXT")]
    intent = ClusterIntent.from_settings(parse_txt_records(records)[0])
    assert intent.roles["web"] == 2 and intent.ranges == {"web": (2, 4)} and not intent.warnings
    [app_text] = [text for language, text in blocks if language == "python"]
    assert app_text == (root / "examples" / "web" / "hello.py").read_text(encoding="utf-8")
    sys.path.insert(0, str(root / "examples" / "web"))
    try:
        server = HttpServer(load_app("hello:app"), "127.0.0.1", 0).start()
    finally:
        sys.path.remove(str(root / "examples" / "web"))
    try:
        http = urllib3.PoolManager()
        answer = json.loads(http.request("GET", f"http://127.0.0.1:{server.port}/x").data)
        assert answer["hello"] == "world" and answer["path"] == "/x"
        health = http.request("GET", f"http://127.0.0.1:{server.port}/health")
        assert health.status == 200 and json.loads(health.data)["draining"] is False
    finally:
        server.close()
