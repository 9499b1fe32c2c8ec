"""The resolver conformance suite: what any source of cluster configuration must do.

Every ``ConfigResolver`` must pass ``ResolverConformance``, as every transport must pass
``TransportConformance``: the zone file and the DNS server (a real BIND 9) do, and so must a
resolver of your own (a key-value store, a service registry...). A test module subclasses it
and supplies one fixture, ``resolver``, serving the zone of ``conformance_zone()``::

    class TestMyResolver(ResolverConformance):
        @pytest.fixture
        def resolver(self, tmp_path):
            with MyResolver(load_zone(conformance_zone())) as resolver:
                yield resolver

The zone (``cellframe/testing/conformance.zone``, origin ``conformance.test.``) holds one
record for each rule checked here. What the suite asks of a resolver, beyond the
``ConfigResolver`` protocol:

- ``node_config(name)`` gives the role, every setting and the TTL of ``<name>``'s TXT records;
  keys are lower-cased and values kept exactly (``=`` included);
- a node with no TXT records, whether its name exists or not, is a spare with one warning, and
  its TTL is the zone's negative-caching TTL (RFC 2308: the lesser of the SOA's TTL and
  minimum), so a node added later is noticed;
- strings that are not pairs are skipped with a warning naming the record and the string, and
  a repeated key takes the value of the last record once the records are sorted;
- ``cluster_intent()`` counts the roles and lists the spares of ``_cluster``; ``node_names()``
  lists ``_nodes``, sorted, however the names are split across strings and records;
- a node name that is not one routing word is a ConfigError, raised before any lookup.

This module needs pytest, which cellframe itself does not depend on.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any

import pytest

from ..config.resolvers import ConfigResolver
from ..config.txtconfig import NodeConfig
from ..errors import ConfigError

__all__ = ["CONFORMANCE_ORIGIN", "ResolverConformance", "conformance_zone"]

CONFORMANCE_ORIGIN = "conformance.test."


def conformance_zone() -> str:
    """The text of the zone a resolver under test must serve."""
    return (files(__package__) / "conformance.zone").read_text(encoding="utf-8")


class ResolverConformance:
    """Behaviour every ConfigResolver must show; subclass it and supply a ``resolver`` fixture
    serving ``conformance_zone()``."""

    @pytest.fixture
    def resolver(self) -> Any:
        raise NotImplementedError("a ResolverConformance subclass must supply `resolver`")

    def test_the_resolver_implements_the_protocol(self, resolver):
        assert isinstance(resolver, ConfigResolver)

    def test_a_node_config_has_its_role_its_settings_and_its_records_ttl(self, resolver):
        config = resolver.node_config("shard-01")
        assert config == NodeConfig("shard-01", "shard", {"role": "shard", "shard-id": "1"})
        assert (config.ttl, config.warnings) == (5, ())
        assert resolver.node_config("web-01").ttl == 60  # a record's own TTL, not the zone's

    def test_equals_signs_inside_values_are_kept(self, resolver):
        settings = resolver.node_config("web-01").settings
        assert settings["health-url"] == "http://web-01/health?full=1"

    def test_a_node_without_a_role_is_a_spare(self, resolver):
        config = resolver.node_config("spare-02")
        assert (config.role, config.settings, config.warnings) == (None, {"rack": "r2"}, ())

    @pytest.mark.parametrize("name", ["web-99", "ns"], ids=["no-such-name", "name-without-txt"])
    def test_a_missing_node_is_a_spare_with_a_warning_and_the_negative_ttl(self, resolver, name,
                                                                            caplog):
        with caplog.at_level(logging.WARNING, logger="cellframe.config"):
            config = resolver.node_config(name)
        assert (config.role, config.settings, config.ttl) == (None, {}, 3)
        assert config.warnings == (
            f"{name}.{CONFORMANCE_ORIGIN}: no TXT records for node {name!r}: it has no role"
            " (a spare)",
        )
        assert caplog.records[-1].getMessage() == config.warnings[0]

    def test_strings_that_are_not_pairs_are_skipped_with_warnings(self, resolver):
        config = resolver.node_config("broken-01")
        assert config.role == "web"
        assert config.settings == {"role": "web", "weight": "3", "note": "",
                                   "data dir": "/srv/data"}
        reasons = [w.split(": ", 2)[2] for w in config.warnings]
        assert reasons == [
            "no unquoted '=' in 'no-equals-sign'; skipped",
            "empty key in '=empty-key'; skipped",
            "empty string; skipped",
            "not UTF-8 at byte 0: b'\\xff\\xfe=x'; skipped",
            "key 'weight' repeated (record 1, string 6 set it first); the later value '2' wins",
            "key 'weight' repeated (record 1, string 7 set it first); the later value '3' wins",
        ]
        assert all(w.startswith(f"broken-01.{CONFORMANCE_ORIGIN}: record ")
                   for w in config.warnings)

    def test_a_repeated_key_takes_the_value_of_the_last_sorted_record(self, resolver):
        assert resolver.node_config("broken-01").settings["weight"] == "3"

    def test_the_cluster_intent_counts_roles_and_lists_spares(self, resolver):
        intent = resolver.cluster_intent()
        assert intent.roles == {"web": 2, "shard": 1}
        assert intent.spares == ("spare-01", "spare-02")
        assert intent.settings == {"replicas": "2", "heartbeat-ms": "100"}
        assert (intent.ttl, intent.warnings) == (5, ())

    def test_node_names_come_from_the_nodes_records_sorted(self, resolver):
        assert resolver.node_names() == [
            "broken-01", "shard-01", "spare-01", "spare-02", "web-01", "web-02"]

    @pytest.mark.parametrize("name", ["web-01.conformance.test", "", "a b", "cluster."])
    def test_a_node_name_that_is_not_a_routing_word_is_a_config_error(self, resolver, name):
        with pytest.raises(ConfigError, match="node name"):
            resolver.node_config(name)
