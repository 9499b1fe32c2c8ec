"""Routing keys and AMQP topic matching, checked against an independent reference."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError
from cellframe.wire.routing import (
    cell_key,
    each_key,
    event_key,
    log_key,
    node_key,
    parse_target,
    reply_key,
    role_key,
    topic_matches,
    validate_name,
)
from tests.transport_support import reference_matches

NAME_CHARS = string.ascii_letters + string.digits + "-_"


@pytest.mark.parametrize(
    "pattern, key, expected",
    [
        ("node.web-01", "node.web-01", True),
        ("node.web-01", "node.web-02", False),
        ("node.*", "node.web-01", True),
        ("node.*", "node", False),
        ("node.*", "node.a.b", False),
        ("*", "all", True),
        ("*.*", "all", False),
        ("#", "all", True),
        ("#", "event.join.web-01", True),
        ("#", "", True),
        ("event.#", "event", True),
        ("event.#", "event.join.web-01", True),
        ("event.#", "events.join", False),
        ("#.web-01", "web-01", True),
        ("#.web-01", "event.join.web-01", True),
        ("#.web-01", "event.web-01.x", False),
        ("event.*.web-01", "event.join.web-01", True),
        ("event.*.web-01", "event.web-01", False),
        ("log.#.error", "log.error", True),
        ("log.#.error", "log.web-01.x.error", True),
        ("#.#", "", True),
        ("#.*", "", False),
        ("*.#", "a", True),
        ("a.#.#.b", "a.b", True),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("all", "all.x", False),
        ("role.web", "ROLE.web", False),
    ],
)
def test_topic_matches_hand_cases(pattern, key, expected):
    assert topic_matches(pattern, key) is expected
    assert reference_matches(pattern, key) is expected


def test_empty_pattern_matches_the_empty_key_as_on_rabbitmq():
    assert topic_matches("", "")


words = st.sampled_from(["a", "b", "web-01", ""])
pattern_words = st.sampled_from(["a", "b", "web-01", "", "*", "#"])


@settings(deadline=None, max_examples=500)
@given(
    pattern=st.lists(pattern_words, min_size=1, max_size=6).map(".".join),
    key=st.lists(words, max_size=6).map(".".join),
)
def test_topic_matches_agrees_with_the_reference(pattern, key):
    assert topic_matches(pattern, key) is reference_matches(pattern, key)


@settings(deadline=None, max_examples=200)
@given(key=st.lists(words, min_size=1, max_size=6).map(".".join))
def test_every_key_matches_itself_and_hash(key):
    assume(key != "")
    assert topic_matches(key, key)
    assert topic_matches("#", key)


# -- names and keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "web-01", "db_2", "X" * 63, "0", "-", "_"])
def test_validate_name_accepts_one_routing_word(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "X" * 64, "web-01.example.org", "a b", "café", "web*", "#", "a\n", "\x00", None, 3],
)
def test_validate_name_refuses_anything_else(name):
    with pytest.raises(ConfigError, match="must be 1 to 63"):
        validate_name(name, "node name")


def test_validate_name_error_names_what_was_wrong():
    with pytest.raises(ConfigError, match=r"role 'a\.b'"):
        validate_name("a.b", "role")


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=70))
def test_validate_name_accepts_exactly_the_name_alphabet(text):
    valid = 1 <= len(text) <= 63 and all(c in NAME_CHARS for c in text)
    try:
        assert validate_name(text) == text
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted is valid


def test_key_builders_make_dotted_keys():
    assert node_key("web-01") == "node.web-01"
    assert role_key("web") == "role.web"
    assert each_key("web") == "each.web"
    assert cell_key("proxy") == "cell.proxy"
    assert event_key("join", "web-01") == "event.join.web-01"
    assert log_key("web-01", "error") == "log.web-01.error"
    assert reply_key("repl-7") == "reply.repl-7"


@pytest.mark.parametrize(
    "build",
    [node_key, role_key, each_key, cell_key, reply_key,
     lambda name: event_key("join", name), lambda name: log_key(name, "info")],
)
def test_key_builders_refuse_names_that_would_split_a_key(build):
    with pytest.raises(ConfigError):
        build("web-01.example.org")


@pytest.mark.parametrize(
    "target, key",
    [
        ("all", "all"),
        ("node:web-01", "node.web-01"),
        ("role:web", "role.web"),
        ("each:web", "each.web"),
        ("cell:proxy", "cell.proxy"),
        ("node.web-01", "node.web-01"),
        ("role.web", "role.web"),
        ("each.web", "each.web"),
        ("cell.proxy", "cell.proxy"),
        ("reply.repl-7", "reply.repl-7"),
    ],
)
def test_parse_target_turns_targets_into_keys(target, key):
    assert parse_target(target) == key


@pytest.mark.parametrize(
    "target, message",
    [
        ("host:web-01", "unknown target kind 'host'"),
        ("all:web", "unknown target kind 'all'"),
        ("node:", "node name ''"),
        ("node:web.01", "node name 'web.01'"),
        ("role:a b", "role 'a b'"),
        ("node.web.01", "'web.01'"),
        ("event.join.web-01", "is not all"),
        ("web-01", "is not all"),
        ("", "is not all"),
        ("node.", "name ''"),
        ("*", "is not all"),
        ("#", "is not all"),
    ],
)
def test_parse_target_refuses_bad_targets_with_a_reason(target, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_target(target)


@settings(deadline=None, max_examples=200)
@given(
    kind=st.sampled_from(["node", "role", "each", "cell"]),
    name=st.text(NAME_CHARS, min_size=1, max_size=63),
)
def test_parse_target_of_any_valid_name_is_a_key_that_routes_to_itself(kind, name):
    key = parse_target(f"{kind}:{name}")
    assert key == f"{kind}.{name}"
    assert parse_target(key) == key
    assert topic_matches(key, key) and topic_matches(f"{kind}.*", key)
