"""Registration against a real BIND 9: signed updates are applied and seen by running nodes,
wrongly signed or misdirected ones are refused with a clear error."""

from __future__ import annotations

import threading

import dns.exception
import dns.query
import dns.rcode
import dns.update
import dns.zone
import pytest

from cellframe.config.registration import register, txt_rdata
from cellframe.config.resolvers import DnsServerResolver
from cellframe.config.watchers import ConfigWatcher
from cellframe.errors import ConfigError, DnsLookupError
from tests.dns_docs import DOCS, doc_blocks, run_doc_block

pytestmark = pytest.mark.bind


def _register(server, name, pairs, ttl=1, **options):
    options.setdefault("key_secret", server.key_secret)
    register(
        server.address, server.port, server.zone, options.pop("key_name", server.key_name),
        options.pop("key_secret"), name, pairs, ttl, **options,
    )


@pytest.fixture
def resolver(bind_server):
    return DnsServerResolver(bind_server.address, bind_server.port, bind_server.zone)


def test_a_registered_node_is_served_with_its_settings_and_listed(bind_server, resolver):
    _register(bind_server, "web-04", {"role": "web", "Max Conns": "a=b \"c\"\n$x"}, ttl=7)
    config = resolver.node_config("web-04")
    assert (config.role, config.ttl) == ("web", 7)
    assert config.settings == {"role": "web", "max conns": "a=b \"c\"\n$x"}
    assert "web-04" in resolver.node_names()


def test_registering_again_replaces_the_node_records(bind_server, resolver):
    _register(bind_server, "web-05", {"role": "web", "weight": "1"})
    _register(bind_server, "web-05", {"role": "proxy"})
    assert resolver.node_config("web-05").settings == {"role": "proxy"}


def test_a_role_change_by_update_reaches_a_running_watcher(bind_server, resolver):
    _register(bind_server, "shard-04", {"role": "shard", "shard-id": "4"}, ttl=1)
    changed = threading.Event()
    seen = []

    def on_change(old, new):
        seen.append((old.role, new.role, new.settings))
        changed.set()

    watcher = ConfigWatcher(
        resolver, "shard-04", on_change,
        initial=resolver.node_config("shard-04"), min_interval=0.05,
    ).start()
    try:
        _register(bind_server, "shard-04", {"role": "web", "weight": "2"}, ttl=1)
        assert changed.wait(timeout=5), "the role change never reached the watcher"
    finally:
        watcher.stop()
    assert seen == [("shard", "web", {"role": "web", "weight": "2"})]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ({"key_secret": "AAAA" * 11}, "rejected the TSIG key"),
        ({"key_name": "stranger"}, "rejected the TSIG key"),
    ],
)
def test_an_update_with_a_wrong_key_is_refused(bind_server, resolver, key, problem):
    before = resolver.node_config("web-01")
    with pytest.raises(ConfigError, match=problem):
        _register(bind_server, "web-01", {"role": "shard"}, **key)
    after = resolver.node_config("web-01")
    assert after == before and after.role == "web"


def test_an_unsigned_update_is_refused(bind_server):
    update = dns.update.UpdateMessage(bind_server.zone)
    update.replace("web-01", 1, txt_rdata({"role": "shard"}))
    response = dns.query.tcp(update, bind_server.address, port=bind_server.port, timeout=5)
    assert dns.rcode.to_text(response.rcode()) == "REFUSED"


def test_an_update_for_a_zone_the_server_does_not_serve_is_refused(bind_server):
    with pytest.raises(ConfigError, match="answered NOTAUTH"):
        register(
            bind_server.address, bind_server.port, "other.test.", bind_server.key_name,
            bind_server.key_secret, "web-01", {"role": "web"},
        )


def test_a_secret_that_is_not_base64_is_a_config_error(bind_server):
    with pytest.raises(ConfigError, match="not valid base64"):
        _register(bind_server, "web-01", {"role": "web"}, key_secret="not base64!")


def test_an_unreachable_server_is_a_lookup_error():
    with pytest.raises(DnsLookupError, match="update of web-01.cluster.test. at 127.0.0.1:1"):
        register("127.0.0.1", 1, "cluster.test.", "k", "AAAA", "web-01", {"role": "web"},
                 timeout=0.5)


@pytest.mark.parametrize(
    ("name", "pairs", "problem"),
    [
        ("bad name", {"role": "web"}, "node name"),
        ("web-09", {}, "no pairs"),
        ("web-09", {"k": "v" * 300}, "a TXT string holds 255"),
    ],
)
def test_bad_registrations_are_refused_before_sending(name, pairs, problem):
    # Port 1 is closed: reaching the network would be a DnsLookupError, not this ConfigError.
    with pytest.raises(ConfigError, match=problem) as caught:
        register("127.0.0.1", 1, "cluster.test.", "k", "AAAA", name, pairs)
    assert not isinstance(caught.value, DnsLookupError)


def test_the_zone_refuses_transfers(bind_server):
    with pytest.raises(dns.exception.DNSException, match="REFUSED"):
        dns.zone.from_xfr(dns.query.xfr(bind_server.address, bind_server.zone,
                                        port=bind_server.port, lifetime=5))


def test_the_bind_examples_in_the_dns_docs_run(bind_server):
    from cellframe.config.resolvers import DnsServerResolver as resolver_class

    globs = {
        "server": bind_server.address, "port": bind_server.port,
        "key_name": bind_server.key_name, "key_secret": bind_server.key_secret,
        "DnsServerResolver": resolver_class,
    }
    blocks = [b for b in doc_blocks(DOCS) if b.needs == "bind_server"]
    assert blocks
    for block in blocks:
        run_doc_block(block, globs)
