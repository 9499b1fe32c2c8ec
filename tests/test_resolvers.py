"""Resolvers: one conformance suite run against the zone file and a real BIND 9, then the
zone-file re-read, errors at the boundary, the TTL watcher, and the examples in docs/dns.md."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import dns.exception
import pytest
from bind_support import (
    DOCS,
    ROOT,
    ZONE_FILE,
    bind_server,  # noqa: F401 - a fixture, used through getfixturevalue
    doc_blocks,
    run_doc_block,
)

from cellframe.config.resolvers import (
    ConfigResolver,
    DnsServerResolver,
    ZoneFileResolver,
    resolver_from_options,
)
from cellframe.config.txtconfig import NodeConfig
from cellframe.config.watchers import ConfigWatcher, IntentWatcher
from cellframe.errors import ConfigError, DnsLookupError


@pytest.fixture(params=["zone_file", pytest.param("dns_server", marks=pytest.mark.bind)])
def resolver(request):
    """Every resolver, serving the same examples/cluster.zone."""
    if request.param == "zone_file":
        made = ZoneFileResolver(ZONE_FILE)
    else:
        server = request.getfixturevalue("bind_server")
        made = DnsServerResolver(server.address, server.port, server.zone)
    yield made
    made.close()


# --- conformance: the same answers from every resolver ---------------------------------


def test_resolver_implements_the_protocol(resolver):
    assert isinstance(resolver, ConfigResolver)


def test_node_config_has_role_settings_and_ttl(resolver):
    config = resolver.node_config("shard-02")
    assert config == NodeConfig("shard-02", "shard", {"role": "shard", "shard-id": "2"})
    assert (config.ttl, config.warnings) == (5, ())


def test_equals_signs_inside_values_are_kept(resolver):
    assert resolver.node_config("web-01").settings["health-url"] == "http://web-01/health?full=1"


def test_node_without_a_role_is_a_spare(resolver):
    config = resolver.node_config("spare-02")
    assert (config.role, config.settings, config.warnings) == (None, {"rack": "r2"}, ())


def test_cluster_intent_counts_roles_and_lists_spares(resolver):
    intent = resolver.cluster_intent()
    assert intent.roles == {"proxy": 1, "web": 3, "shard": 3, "logsump": 1}
    assert intent.spares == ("spare-01", "spare-02")
    assert intent.settings == {"replicas": "3", "heartbeat-ms": "100", "failure-timeout-ms": "500"}
    assert (intent.ttl, intent.warnings) == (5, ())


def test_repeated_key_takes_the_value_of_the_last_sorted_record(resolver):
    assert resolver.node_config("broken-01").settings["weight"] == "3"


def test_malformed_strings_are_skipped_with_warnings(resolver):
    config = resolver.node_config("broken-01")
    assert config.role == "web"
    assert config.settings == {"role": "web", "weight": "3", "note": "", "data dir": "/srv/data"}
    reasons = [w.split(": ", 2)[2] for w in config.warnings]
    assert reasons == [
        "no unquoted '=' in 'no-equals-sign'; skipped",
        "empty key in '=empty-key'; skipped",
        "empty string; skipped",
        "not UTF-8 at byte 0: b'\\xff\\xfe=x'; skipped",
        "key 'weight' repeated (record 1, string 6 set it first); the later value '2' wins",
        "key 'weight' repeated (record 1, string 7 set it first); the later value '3' wins",
    ]
    assert all(w.startswith("broken-01.cluster.test.: record ") for w in config.warnings)


@pytest.mark.parametrize("name", ["web-99", "ns"])
def test_missing_node_is_a_spare_with_a_warning_and_the_negative_ttl(resolver, name, caplog):
    with caplog.at_level(logging.WARNING, logger="cellframe.config"):
        config = resolver.node_config(name)
    assert (config.role, config.settings, config.ttl) == (None, {}, 5)
    assert config.warnings == (
        f"{name}.cluster.test.: no TXT records for node {name!r}: it has no role (a spare)",
    )
    assert caplog.records[-1].getMessage() == config.warnings[0]


def test_node_names_come_from_the_nodes_record(resolver):
    assert resolver.node_names() == sorted(
        ["proxy-01", "web-01", "web-02", "web-03", "shard-01", "shard-02", "shard-03",
         "spare-01", "spare-02", "logsump-01", "broken-01"]
    )


@pytest.mark.parametrize("name", ["web-01.cluster.test", "", "a b", "_cluster"[1:] + "."])
def test_a_node_name_that_is_not_a_routing_word_is_a_config_error(resolver, name):
    with pytest.raises(ConfigError, match="node name"):
        resolver.node_config(name)


# --- zone file -----------------------------------------------------------------------------


def _zone_copy(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "cluster.zone"
    if text is None:
        shutil.copy(ZONE_FILE, path)
    else:
        path.write_text(text)
    return path


def _rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def test_zone_file_is_read_again_when_it_changes(tmp_path):
    path = _zone_copy(tmp_path)
    resolver = ZoneFileResolver(path)
    assert resolver.node_config("web-02").role == "web"
    _rewrite(path, '"role=web" "weight=10"\nweb-03', '"role=shard" "weight=10"\nweb-03')
    assert resolver.node_config("web-02").role == "shard"


def test_a_broken_rewrite_keeps_the_last_good_zone_and_warns_once(tmp_path, caplog):
    path = _zone_copy(tmp_path)
    resolver = ZoneFileResolver(path)
    path.write_text(path.read_text() + "\nweb-09 IN TXT \"unterminated\n")
    with caplog.at_level(logging.WARNING, logger="cellframe.config"):
        assert resolver.node_config("web-01").role == "web"
        assert resolver.node_config("web-01").role == "web"
    stale = [r for r in caplog.records if "last good read" in r.getMessage()]
    assert len(stale) == 1


def test_missing_zone_file_is_a_lookup_error(tmp_path):
    with pytest.raises(DnsLookupError, match="No such file"):
        ZoneFileResolver(tmp_path / "absent.zone")


def test_zone_file_without_origin_needs_one_passed_in(tmp_path):
    path = _zone_copy(tmp_path, ZONE_FILE.read_text().replace("$ORIGIN cluster.test.\n", ""))
    with pytest.raises(DnsLookupError, match=r"no \$ORIGIN: pass origin="):
        ZoneFileResolver(path)
    assert ZoneFileResolver(path, origin="cluster.test.").node_config("web-01").role == "web"


def test_zone_file_refuses_include(tmp_path):
    path = _zone_copy(tmp_path, ZONE_FILE.read_text() + f"$INCLUDE {ZONE_FILE}\n")
    with pytest.raises(DnsLookupError) as caught:
        ZoneFileResolver(path)
    assert isinstance(caught.value.__cause__, dns.exception.DNSException)


def test_zone_without_cluster_record_has_no_intent(tmp_path):
    path = _zone_copy(tmp_path)
    _rewrite(path, "_cluster ", "_other ")
    with pytest.raises(ConfigError, match="_cluster.cluster.test.: no TXT records"):
        ZoneFileResolver(path).cluster_intent()


# --- DNS server errors -------------------------------------------------------------------


def test_unreachable_server_is_a_lookup_error_caused_by_dnspython():
    with pytest.raises(DnsLookupError, match="at 127.0.0.1:1 failed") as caught:
        DnsServerResolver("127.0.0.1", 1, timeout=0.2).node_config("web-01")
    assert isinstance(caught.value.__cause__, dns.exception.DNSException)


@pytest.mark.bind
def test_a_domain_the_server_does_not_serve_is_a_lookup_error(bind_server):  # noqa: F811
    other = DnsServerResolver(bind_server.address, bind_server.port, "other.test.")
    with pytest.raises(DnsLookupError, match="REFUSED"):
        other.node_config("web-01")


# --- building a resolver from options ------------------------------------------------------


def test_resolver_from_options_builds_the_backend_asked_for():
    assert isinstance(resolver_from_options(zone_file=str(ZONE_FILE)), ZoneFileResolver)
    server = resolver_from_options(dns="127.0.0.2:10054", domain="c.test.")
    assert (server.address, server.port, server.origin.to_text()) == ("127.0.0.2", 10054, "c.test.")
    assert resolver_from_options(dns="[::1]:99").address == "::1"
    assert resolver_from_options(dns="::1").port == 53


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "exactly one"),
        ({"zone_file": "z", "dns": "h"}, "exactly one"),
        ({"dns": "10.0.0.1:dns"}, "port 'dns'"),
        ({"dns": "10.0.0.1:70000"}, "port '70000'"),
        ({"dns": ":53"}, "no host"),
        ({"dns": "ns.example.org"}, "DNS server 'ns.example.org'"),
        ({"dns": "10.0.0.1", "domain": "a..b"}, "domain 'a..b'"),
    ],
)
def test_resolver_from_options_rejects_bad_options(options, problem):
    with pytest.raises(ConfigError, match=problem):
        resolver_from_options(**options)


# --- the TTL watcher ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ttl_zone(tmp_path: Path, ttl: int) -> Path:
    return _zone_copy(tmp_path, ZONE_FILE.read_text().replace("$TTL 5", f"$TTL {ttl}"))


def test_watcher_reads_again_only_when_the_ttl_has_run_out(tmp_path):
    path, clock, changes = _ttl_zone(tmp_path, 30), FakeClock(), []
    watcher = ConfigWatcher(
        ZoneFileResolver(path), "web-02", lambda old, new: changes.append((old, new)), clock=clock
    )
    assert watcher.poll() is True
    assert changes == [(None, NodeConfig("web-02", "web", {"role": "web", "weight": "10"}))]
    _rewrite(path, '"role=web" "weight=10"\nweb-03', '"role=shard" "weight=10"\nweb-03')
    clock.now += 29.9
    assert watcher.poll() is False and watcher.current.role == "web"
    clock.now += 0.1
    assert watcher.poll() is True
    assert [(old.role, new.role) for old, new in changes[1:]] == [("web", "shard")]


def test_watcher_reports_nothing_when_nothing_changed(tmp_path):
    path, clock, changes = _ttl_zone(tmp_path, 1), FakeClock(), []
    resolver = ZoneFileResolver(path)
    watcher = ConfigWatcher(
        resolver, "web-02", lambda old, new: changes.append(new),
        initial=resolver.node_config("web-02"), clock=clock,
    )
    _rewrite(path, "spare-01    IN TXT  \"rack=r1\"", "spare-01    IN TXT  \"rack=r9\"")
    for _ in range(3):
        clock.now += 1
        assert watcher.poll() is False
    assert changes == []


def test_watcher_floors_a_zero_ttl_at_min_interval(tmp_path):
    clock = FakeClock()
    watcher = ConfigWatcher(
        ZoneFileResolver(_ttl_zone(tmp_path, 0)), "web-01", lambda o, n: None,
        min_interval=2.0, clock=clock,
    )
    watcher.poll()
    assert watcher.seconds_until_due() == 2.0


def test_watcher_keeps_the_last_config_when_a_read_fails_and_retries_later(caplog):
    clock, calls = FakeClock(), []

    class FailingOnce:
        def node_config(self, name: str) -> NodeConfig:
            calls.append(name)
            if len(calls) == 2:
                raise DnsLookupError("server gone")
            return NodeConfig(name, "web" if len(calls) == 1 else "shard", {}, ttl=1)

    changes = []
    watcher = ConfigWatcher(
        FailingOnce(), "web-01", lambda old, new: changes.append(new.role),
        min_interval=1.0, retry_interval=10.0, clock=clock,
    )
    watcher.poll()
    clock.now += 1
    with caplog.at_level(logging.WARNING, logger="cellframe.config"):
        assert watcher.poll() is False
    assert watcher.current.role == "web" and "server gone" in caplog.text
    clock.now += 9.9
    assert watcher.poll() is False and len(calls) == 2
    clock.now += 0.1
    assert watcher.poll() is True and changes == ["web", "shard"]


def test_a_failing_callback_does_not_stop_the_watcher(tmp_path, caplog):
    clock = FakeClock()

    def explode(old, new):
        raise RuntimeError("callback bug")

    watcher = ConfigWatcher(ZoneFileResolver(ZONE_FILE), "web-01", explode, clock=clock)
    with caplog.at_level(logging.ERROR, logger="cellframe.config"):
        assert watcher.poll() is True
    assert "callback bug" in caplog.text and watcher.current.role == "web"


def test_watcher_thread_delivers_a_role_change_without_restart(tmp_path):
    path = _ttl_zone(tmp_path, 0)
    resolver = ZoneFileResolver(path)
    changed = threading.Event()
    seen = []

    def on_change(old, new):
        seen.append((old.role, new.role))
        changed.set()

    watcher = ConfigWatcher(
        resolver, "web-02", on_change, initial=resolver.node_config("web-02"), min_interval=0.02
    ).start()
    try:
        _rewrite(path, '"role=web" "weight=10"\nweb-03', '"role=shard" "weight=10"\nweb-03')
        assert changed.wait(timeout=5), "the watcher thread never reported the change"
    finally:
        watcher.stop()
    assert seen == [("web", "shard")]
    assert not watcher._thread.is_alive()


def test_intent_watcher_reports_a_changed_role_count(tmp_path):
    path, clock, counts = _ttl_zone(tmp_path, 1), FakeClock(), []
    watcher = IntentWatcher(
        ZoneFileResolver(path), lambda old, new: counts.append(new.roles["web"]), clock=clock
    )
    watcher.poll()
    _rewrite(path, '"web=3"', '"web=4"')
    clock.now += 1
    assert watcher.poll() is True and counts == [3, 4]


# --- docs/dns.md -----------------------------------------------------------------------------


def test_every_block_in_the_dns_docs_is_one_the_tests_run():
    blocks = doc_blocks()
    assert [b.language for b in blocks if b.language not in ("dns", "pycon")] == []
    assert {b.needs for b in blocks} <= {None, "bind_server"}
    assert sum(b.language == "dns" for b in blocks) == 1


def test_the_zone_in_the_docs_is_the_bundled_zone():
    (zone,) = [b for b in doc_blocks() if b.language == "dns"]
    assert zone.text == ZONE_FILE.read_text()


def test_the_python_examples_in_the_dns_docs_run(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples open examples/cluster.zone relative to the repo
    globs: dict[str, object] = {}
    blocks = [b for b in doc_blocks(DOCS) if b.language == "pycon" and b.needs is None]
    assert len(blocks) >= 6
    for block in blocks:
        run_doc_block(block, globs)
