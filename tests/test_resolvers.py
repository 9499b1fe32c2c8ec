"""Resolvers: the conformance suite of cellframe.testing run against the zone file and a real
BIND 9, then the zone-file re-read, errors at the boundary, the TTL watcher, and the examples
in docs/dns.md."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import dns.exception
import pytest

from cellframe.config.resolvers import (
    DnsServerResolver,
    ZoneFileResolver,
    resolver_from_options,
)
from cellframe.config.txtconfig import NodeConfig
from cellframe.config.watchers import ConfigWatcher, IntentWatcher
from cellframe.errors import ConfigError, DnsLookupError
from cellframe.testing import ResolverConformance, conformance_zone, run_named
from tests.dns_docs import DOCS, ROOT, ZONE_FILE, doc_blocks, run_doc_block

# --- conformance: the same answers from every resolver ---------------------------------


class TestZoneFileResolverConformance(ResolverConformance):
    @pytest.fixture
    def resolver(self, tmp_path):
        path = tmp_path / "conformance.zone"
        path.write_text(conformance_zone())
        with ZoneFileResolver(path) as resolver:
            yield resolver


@pytest.mark.bind
class TestDnsServerResolverConformance(ResolverConformance):
    @pytest.fixture(scope="class")
    def server(self):
        with run_named(conformance_zone()) as server:
            yield server

    @pytest.fixture
    def resolver(self, server):
        with server.resolver() as resolver:
            yield resolver


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
    with pytest.raises(DnsLookupError, match=r"no \$ORIGIN: name the zone's domain \(--domain"):
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
def test_a_domain_the_server_does_not_serve_is_a_lookup_error(bind_server):
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


def _ttl_zone(tmp_path: Path, ttl: int) -> Path:
    return _zone_copy(tmp_path, ZONE_FILE.read_text().replace("$TTL 5", f"$TTL {ttl}"))


def test_watcher_reads_again_only_when_the_ttl_has_run_out(tmp_path, fake_clock):
    path, changes = _ttl_zone(tmp_path, 30), []
    watcher = ConfigWatcher(ZoneFileResolver(path), "web-02",
                            lambda old, new: changes.append((old, new)), clock=fake_clock)
    assert watcher.poll() is True
    assert changes == [(None, NodeConfig("web-02", "web", {"role": "web", "weight": "10"}))]
    _rewrite(path, '"role=web" "weight=10"\nweb-03', '"role=shard" "weight=10"\nweb-03')
    fake_clock.advance(29.9)
    assert watcher.poll() is False and watcher.current.role == "web"
    fake_clock.advance(0.1)
    assert watcher.poll() is True
    assert [(old.role, new.role) for old, new in changes[1:]] == [("web", "shard")]


def test_watcher_reports_nothing_when_nothing_changed(tmp_path, fake_clock):
    path, changes = _ttl_zone(tmp_path, 1), []
    resolver = ZoneFileResolver(path)
    watcher = ConfigWatcher(
        resolver, "web-02", lambda old, new: changes.append(new),
        initial=resolver.node_config("web-02"), clock=fake_clock,
    )
    _rewrite(path, "spare-01    IN TXT  \"rack=r1\"", "spare-01    IN TXT  \"rack=r9\"")
    for _ in range(3):
        fake_clock.advance(1)
        assert watcher.poll() is False
    assert changes == []


def test_watcher_floors_a_zero_ttl_at_min_interval(tmp_path, fake_clock):
    watcher = ConfigWatcher(
        ZoneFileResolver(_ttl_zone(tmp_path, 0)), "web-01", lambda o, n: None,
        min_interval=2.0, clock=fake_clock,
    )
    watcher.poll()
    assert watcher.seconds_until_due() == 2.0


def test_watcher_keeps_the_last_config_when_a_read_fails_and_retries_later(caplog, fake_clock):
    calls = []

    class FailingOnce:
        def node_config(self, name: str) -> NodeConfig:
            calls.append(name)
            if len(calls) == 2:
                raise DnsLookupError("server gone")
            return NodeConfig(name, "web" if len(calls) == 1 else "shard", {}, ttl=1)

    changes = []
    watcher = ConfigWatcher(
        FailingOnce(), "web-01", lambda old, new: changes.append(new.role),
        min_interval=1.0, retry_interval=10.0, clock=fake_clock,
    )
    watcher.poll()
    fake_clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="cellframe.config"):
        assert watcher.poll() is False
    assert watcher.current.role == "web" and "server gone" in caplog.text
    fake_clock.advance(9.9)
    assert watcher.poll() is False and len(calls) == 2
    fake_clock.advance(0.1)
    assert watcher.poll() is True and changes == ["web", "shard"]


def test_a_failing_callback_does_not_stop_the_watcher(tmp_path, caplog, fake_clock):
    def explode(old, new):
        raise RuntimeError("callback bug")

    watcher = ConfigWatcher(ZoneFileResolver(ZONE_FILE), "web-01", explode, clock=fake_clock)
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


def test_intent_watcher_reports_a_changed_role_count(tmp_path, fake_clock):
    path, counts = _ttl_zone(tmp_path, 1), []
    watcher = IntentWatcher(
        ZoneFileResolver(path), lambda old, new: counts.append(new.roles["web"]), clock=fake_clock
    )
    watcher.poll()
    _rewrite(path, '"web=3"', '"web=4"')
    fake_clock.advance(1)
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
