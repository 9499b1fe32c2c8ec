"""The TXT string rules: RFC 1464 pairs, warnings instead of crashes, and the cluster intent."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.config.txtconfig import (
    ClusterIntent,
    NodeConfig,
    format_txt_string,
    int_setting,
    node_name_from_hostname,
    parse_node_config,
    parse_txt_records,
    parse_txt_string,
)
from cellframe.errors import ConfigError


def test_first_unquoted_equals_separates_key_and_value():
    assert parse_txt_string(b"url=http://h/?a=b=c") == ("url", "http://h/?a=b=c")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"a`=b=c", "a=b"),
        (b"two` words=v", "two words"),
        (b"tick``=v", "tick`"),
        (b"tab`\tkey=v", "tab\tkey"),
        (b"`  padded`  =v", "  padded "),
    ],
)
def test_backquote_quotes_equals_blanks_and_backquote_in_the_key(raw, key):
    assert parse_txt_string(raw)[0] == key


def test_backquote_before_any_other_character_stands_for_itself():
    assert parse_txt_string(b"a`b=c") == ("a`b", "c")


def test_blanks_around_the_key_are_ignored_but_the_value_is_kept_exactly():
    assert parse_txt_string(b" \t key \t= a value \n") == ("key", " a value \n")


def test_keys_are_lower_cased_and_keep_dashes_and_dots():
    assert parse_txt_string(b"Store.Segment-Bytes=1") == ("store.segment-bytes", "1")


def test_key_with_empty_value_is_a_pair():
    assert parse_txt_string(b"note=") == ("note", "")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty string"),
        (b"no-equals", "no unquoted '='"),
        (b"quoted`=only", "no unquoted '='"),
        (b"=value", "empty key"),
        (b" \t =value", "empty key"),
        (b"\xff\xfe=x", "not UTF-8 at byte 0"),
        (b"ok\xc3=x", "not UTF-8 at byte 2"),
        (b"bell\x07=x", "control character"),
    ],
)
def test_a_string_that_is_not_a_pair_raises_config_error_saying_why(raw, reason):
    with pytest.raises(ConfigError, match=reason):
        parse_txt_string(raw)


def test_bad_strings_in_records_become_warnings_with_positions(caplog):
    records = [(b"role=web", b"", b"junk", b"\xff=1", b"ok=1")]
    with caplog.at_level(logging.WARNING, logger="cellframe.config"):
        config, warnings = parse_txt_records(records, "n.z.: ")
    assert config == {"role": "web", "ok": "1"}
    assert [w.split(":")[1].strip() for w in warnings] == [
        "record 1 of 1, string 2",
        "record 1 of 1, string 3",
        "record 1 of 1, string 4",
    ]
    assert all(w.startswith("n.z.: ") for w in warnings)
    assert [r.getMessage() for r in caplog.records] == warnings


def test_repeated_key_takes_the_last_value_whatever_order_the_records_arrive_in():
    records = [(b"w=1", b"W=2"), (b"x=0",), (b"w=3",)]
    results = {
        tuple(parse_txt_records(list(order))[0].items())
        for order in itertools.permutations(records)
    }
    assert results == {(("w", "3"), ("x", "0"))}
    _, warnings = parse_txt_records(records)
    assert len(warnings) == 2 and all("key 'w' repeated" in w for w in warnings)


@settings(deadline=None, max_examples=200)
@given(
    key=st.text(
        st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t"), min_size=1
    ),
    value=st.text(st.characters(exclude_categories=("Cs",))),
)
def test_a_formatted_pair_reads_back_as_the_same_pair(key, value):
    try:
        raw = format_txt_string(key, value)
    except ConfigError:
        assert len(f"{key}={value}".encode()) > 200  # only over-long pairs are refused
        return
    assert parse_txt_string(raw) == (key.lower(), value)


@settings(deadline=None, max_examples=200)
@given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=4))
def test_parsing_arbitrary_bytes_never_raises(records):
    settings_, warnings = parse_txt_records([tuple(r) for r in records])
    assert all(isinstance(k, str) and k == k.lower() for k in settings_)
    assert all(isinstance(w, str) for w in warnings)


def test_format_refuses_an_empty_key_and_a_pair_over_255_bytes():
    with pytest.raises(ConfigError, match="empty key"):
        format_txt_string("", "v")
    with pytest.raises(ConfigError, match="256 bytes"):
        format_txt_string("k", "v" * 254)


def test_node_role_comes_from_the_role_key_and_settings_keep_every_pair():
    config = parse_node_config("web-01", [(b"role=web", b"weight=10")], ttl=5)
    assert (config.role, config.settings, config.ttl) == (
        "web", {"role": "web", "weight": "10"}, 5,
    )


@pytest.mark.parametrize("records", [[(b"rack=r1",)], [(b"role=",)]])
def test_a_node_without_a_role_is_a_spare(records):
    assert parse_node_config("spare-01", records).role is None


def test_a_role_that_is_not_a_routing_word_is_dropped_with_a_warning():
    config = parse_node_config("n", [(b"role=web server",)])
    assert config.role is None
    assert any("role 'web server'" in w for w in config.warnings)


def test_a_name_without_records_is_a_spare_with_a_warning():
    config = parse_node_config("ghost", None, ttl=7)
    assert (config.role, config.settings, config.ttl) == (None, {}, 7)
    assert "no TXT records" in config.warnings[0]


def test_configs_are_equal_when_name_role_and_settings_are():
    a = NodeConfig("n", "web", {"k": "v"}, ttl=5, warnings=("w",))
    assert a == NodeConfig("n", "web", {"k": "v"}, ttl=1)
    assert a != NodeConfig("n", "shard", {"k": "v"}, ttl=5)


def test_cluster_intent_sorts_roles_spares_and_settings():
    intent = ClusterIntent.from_settings(
        {"proxy": "1", "web": "3", "spares": "spare-01, spare-02 spare-01",
         "replicas": "3", "heartbeat-ms": "100", "store.segment-bytes": "1048576"}
    )
    assert intent.roles == {"proxy": 1, "web": 3}
    assert intent.total == 4
    assert intent.spares == ("spare-01", "spare-02")
    assert intent.settings == {
        "replicas": "3", "heartbeat-ms": "100", "store.segment-bytes": "1048576",
    }
    assert intent.warnings == ()


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ({"web": "-1"}, "count '-1' is not a non-negative integer"),
        ({"web": "3.0"}, "count '3.0'"),
        ({"web": ""}, "count ''"),
        ({"web server": "1"}, "role 'web server' must be"),
        ({"spares": "ok-1,bad name!"}, "spare name 'name!'"),
    ],
)
def test_bad_cluster_intent_is_a_warning_or_with_strict_a_config_error(pairs, problem):
    intent = ClusterIntent.from_settings(pairs)
    assert any(problem in w for w in intent.warnings)
    with pytest.raises(ConfigError, match="cluster intent: .*" + problem.split("'")[0]):
        ClusterIntent.from_settings(pairs, strict=True)


def test_int_setting_reads_integers_and_names_the_bad_key():
    assert int_setting({"heartbeat-ms": "100"}, "heartbeat-ms", 5) == 100
    assert int_setting({}, "heartbeat-ms", 5) == 5
    with pytest.raises(ConfigError, match="'heartbeat-ms': 'fast'"):
        int_setting({"heartbeat-ms": "fast"}, "heartbeat-ms", 5)
    with pytest.raises(ConfigError, match="below the minimum 1"):
        int_setting({"replicas": "0"}, "replicas", 3, minimum=1)


def test_node_name_is_the_first_label_of_the_hostname_lower_cased():
    assert node_name_from_hostname("Web-01.Example.org") == "web-01"
    with pytest.raises(ConfigError, match="node name"):
        node_name_from_hostname("bad host.example.org")
