"""HAProxy's runtime API, against a real HAProxy: what the proxy cell relies on."""

from __future__ import annotations

import socket

import pytest
import urllib3

from cellframe.errors import HaproxyError
from cellframe.testing import wait_for
from cellframe.web import HttpServer, load_app


@pytest.fixture
def servers():
    app = load_app("tests.web_apps:app")
    started = [HttpServer(app, "127.0.0.1", 0).start() for _ in range(2)]
    yield started
    for server in started:
        server.close()


def test_servers_added_at_runtime_serve_and_their_weights_split_the_requests(haproxy_server, servers) -> None:
    runtime = haproxy_server.runtime()
    runtime.add_server("web", "a", "127.0.0.1", servers[0].port, 10)
    runtime.add_server("web", "b", "127.0.0.1", servers[1].port, 2)
    state = runtime.servers("web")
    assert {n: (s.port, s.weight, s.up) for n, s in state.items()} == {
        "a": (servers[0].port, 10, True), "b": (servers[1].port, 2, True)}
    http = urllib3.PoolManager()
    for _ in range(24):
        assert http.request("GET", haproxy_server.url + "/").status == 200
    assert runtime.request_totals("web") == {"a": 20, "b": 4}


def test_a_drained_server_gets_no_new_requests_and_is_then_deleted(haproxy_server, servers) -> None:
    runtime = haproxy_server.runtime()
    runtime.add_server("web", "a", "127.0.0.1", servers[0].port, 10)
    runtime.add_server("web", "b", "127.0.0.1", servers[1].port, 10)
    runtime.drain("web", "b")
    assert runtime.servers("web")["b"].draining
    http = urllib3.PoolManager()
    answers = {http.request("GET", haproxy_server.url + "/").data for _ in range(10)}
    assert answers == {str(servers[0].port).encode()}
    runtime.delete_server("web", "b")
    assert set(runtime.servers("web")) == {"a"}


def test_health_checks_take_a_server_that_stops_answering_out(haproxy_server, servers) -> None:
    runtime = haproxy_server.runtime()
    runtime.add_server("web", "a", "127.0.0.1", servers[0].port, 10)
    servers[0].draining = True  # its health path now answers 503
    wait_for(lambda: not runtime.servers("web")["a"].up, 2, what="a marked down by its checks",
             show=lambda: runtime.servers("web"))


def test_a_refused_command_is_a_haproxy_error_with_haproxy_s_answer(haproxy_server) -> None:
    with pytest.raises(HaproxyError, match="No such server"):
        haproxy_server.runtime().set_weight("web", "nobody", 3)


def test_closing_a_web_server_with_connections_open_ends_its_thread_cleanly_and_frees_the_port(
        monkeypatch) -> None:
    died: list[BaseException | None] = []
    monkeypatch.setattr("threading.excepthook", lambda args: died.append(args.exc_value))
    app = load_app("tests.web_apps:app")
    for _ in range(30):  # closing raced the serving thread's select now and then
        server = HttpServer(app, "127.0.0.1", 0).start()
        http = urllib3.PoolManager()
        assert http.request("GET", f"http://127.0.0.1:{server.port}/").status == 200  # kept alive
        server.close()
        assert not server._thread.is_alive()
        http.clear()
        with socket.socket() as again:  # the port is free again
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", server.port))
    assert died == []
