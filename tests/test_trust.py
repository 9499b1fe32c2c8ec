"""Trust without a broker: the signature's published layout, keys and their capabilities, key
files and their reloading, and the replay cache's bounds."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from pathlib import Path

import pytest

from cellframe.cell import Cell, nodeverbs, transition
from cellframe.errors import ConfigError, StateMachineError
from cellframe.healing.membership import Membership  # noqa: F401  (declares its node verbs)
from cellframe.language.symbols import Keyword
from cellframe.node.node import Node
from cellframe.transports.memory import MemoryBroker
from cellframe.wire import keys as keys_module
from cellframe.wire.envelope import Envelope
from cellframe.wire.keys import Capability, Key, KeyFiles, Keyring, dump_keys, load_keys, new_key
from cellframe.wire.replay import ReplayCache
from cellframe.wire.routing import speaker_of
from cellframe.wire.signing import SIGNATURE_HEADER, Signer, canonical_bytes, load_secret

SECURITY_DOCS = Path(__file__).resolve().parents[1] / "docs" / "security.md"


# -- the signature, as docs/security.md publishes it ---------------------------------------------


def test_the_signature_test_vector_of_the_security_docs() -> None:
    page = SECURITY_DOCS.read_text()
    section = page[page.index("### Test vector"):]
    hex_block = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    documented = bytes.fromhex("".join(hex_block.split()))
    signature = re.search(r"the signature is\n`([0-9a-f]{64})`", section).group(1)
    envelope = Envelope(b'(say "hello")', message_id="m-1", timestamp=1700000000.25,
                        reply_to="reply.repl", sender="repl")
    canonical = canonical_bytes(envelope, exchange="cellframe.control", target="cell.echo-01",
                                key_id="ops-1", expires=1700000300.25)
    assert canonical == documented and len(canonical) == 186
    # The layout alone, by hand, as a client in another language would build it.
    def field(value: bytes) -> bytes:
        return b"\x01" + len(value).to_bytes(8, "big") + value
    by_hand = b"cellframe-sig-v2" + b"".join(field(v) for v in (
        b"cellframe.control", b"cell.echo-01", b"m-1", b"ops-1",
        struct.pack(">d", 1700000000.25), struct.pack(">d", 1700000300.25),
        b"reply.repl", b"repl")) + b"\x00" + bytes(8) + field(b'(say "hello")')  # no correlation
    assert by_hand == documented
    assert hmac.new(bytes(range(32)), documented, hashlib.sha256).hexdigest() == signature
    signed = Signer(Key("ops-1", bytes(range(32))), ttl=300).sign(envelope, "cell.echo-01")
    assert signed.headers[SIGNATURE_HEADER] == signature


def test_an_absent_field_is_a_zero_byte_and_eight_zero_bytes() -> None:
    envelope = Envelope(b"", message_id="m", timestamp=0.0)
    canonical = canonical_bytes(envelope, exchange=None, target=None, key_id="k", expires=1.0)
    assert canonical.startswith(b"cellframe-sig-v2" + b"\x00" * 9 + b"\x00" * 9)
    assert canonical.endswith(b"\x00" * 9 + b"\x00" * 9 + b"\x01" + b"\x00" * 8)


# -- keys and capabilities ----------------------------------------------------------------------


@pytest.mark.parametrize("capability, key, verb, allowed", [
    ("all *", "node.db-01", "differentiate", True),
    ("all", "anything.at.all", None, True),
    ("role:web set-weight", "role.web", "set-weight", True),
    ("role:web set-weight", "each.web", "set-weight", True),
    ("role:web set-weight", "role.db", "set-weight", False),
    ("role:web set-weight", "role.web", "differentiate", False),
    ("role:web set-weight", "node.web", "set-weight", False),
    ("node:web-* status ping", "node.web-07", "ping", True),
    ("node:web-* status ping", "node.db-01", "ping", False),
    ("cell:echo-01 say", "cell.echo-01", "say", True),
    ("cell:echo-01 say", "cell.echo-012", "say", False),
    ("key:heartbeat.* *", "heartbeat.web-01", "heartbeat", True),
    ("cell:* total", "cell.x", None, False),  # no verb (not a form) is allowed only by *
])
def test_a_capability_allows_its_targets_and_verbs_only(capability, key, verb, allowed) -> None:
    assert Capability.parse(capability).allows(key, verb) is allowed


def test_a_key_answers_a_repeated_capability_question_alike_from_its_memory() -> None:
    key = new_key("ops-1", ["role:web set-weight", "node:web-* status"])
    questions = [("role.web", "set-weight"), ("role.web", "differentiate"),
                 ("node.web-01", "status"), ("node.db-01", "status"), ("role.web", None)]
    first = [key.allows(*question) for question in questions]
    assert first == [True, False, True, False, False]
    assert [key.allows(*question) for question in questions] == first


def test_a_keys_capability_memory_stays_bounded() -> None:
    key = new_key("ops-1", ["node:web-* status"])
    for i in range(3 * keys_module._DECISIONS):
        assert key.allows(f"node.web-{i}", "status") and not key.allows(f"node.db-{i}", "status")
    assert len(key.decisions) <= keys_module._DECISIONS


@pytest.mark.parametrize("text", ["", "   ", "web set-weight", "role:", "host:web *", 42])
def test_a_malformed_capability_is_a_config_error(text) -> None:
    with pytest.raises(ConfigError):
        Capability.parse(text)


@pytest.mark.parametrize("text, message", [
    # Both were accepted and matched no verb at all: verbs are exact names, not globs, and a
    # second target on the line was read as a verb.
    ("role:web set-*", "verbs are exact names"),
    ("role:web set-weigh?", "verbs are exact names"),
    ("role:web node:db-* status", "one target a capability: 'node:db-\\*' is a second"),
    ("all cell:echo-01 say", "one target a capability: 'cell:echo-01' is a second"),
    # Names are routing words, so these targets matched no node, role or cell at all.
    ("node:web-01,web-02 status", "would match no node"),
    ("role:web.eu set-weight", "would match no role"),
    ("cell:echo/01 say", "would match no cell"),
])
def test_a_capability_that_would_match_nothing_it_means_is_a_config_error(
        text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Capability.parse(text)


def test_a_key_file_round_trips_without_losing_a_capability(tmp_path) -> None:
    keys = [new_key("ops-1", ["role:web set-weight", "node:web-* status ping"]),
            new_key("nodes-1", kind="node"), new_key("web-01", kind="node", node="web-01")]
    path = tmp_path / "k.toml"
    path.write_text(dump_keys(keys))
    assert load_keys(path) == keys


@pytest.mark.parametrize("text, message", [
    ("", "no \\[\\[key\\]\\]"),
    ("[[key]]\nid = 'a'\n", "no 'secret'"),
    ("[[key]]\nid = 'a'\nsecret = 'zz'\n", "hex"),
    ("[[key]]\nid = 'a'\nsecret = '00ff'\n", "at least 16"),
    ("[[key]]\nid = 'a b'\nsecret = '" + "00" * 32 + "'\n", "key id"),
    ("[[key]]\nid = 'a'\nkind = 'root'\nsecret = '" + "00" * 32 + "'\n", "kind"),
    ("[[key]]\nid = 'a'\nsecret = '" + "00" * 32 + "'\nallow = 'all'\n", "list"),
    ("[[key]]\nid = 'a'\nnode = 'web-01'\nsecret = '" + "00" * 32 + "'\n", "only a node key"),
    ("[[key]]\nid = 'a'\nkind = 'node'\nnode = 'web.01'\nsecret = '" + "00" * 32 + "'\n",
     "node 'web.01'"),
    ("not toml [", "not valid TOML"),
    ("[[key]]\nid = 'a'\nallow = ['all *']\nsecret = '" + "00" * 32 + "'\n[[key]]\nid = 'a'\n"
     "allow = ['all *']\nsecret = '" + "01" * 32 + "'\n", "two different keys share the id 'a'"),
    ("[[key]]\nid = 'a'\nkind = 'node'\nnod = 'web-01'\nsecret = '" + "00" * 32 + "'\n",
     "key 'a' has unknown field\\(s\\) 'nod'"),
    ("[[key]]\nid = 'a'\nalow = ['all *']\nAllow = []\nsecret = '" + "00" * 32 + "'\n",
     "unknown field\\(s\\) 'Allow', 'alow'"),
])
def test_a_bad_key_file_is_a_config_error_saying_what_is_wrong(tmp_path, text, message) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_keys(path)


def test_two_different_keys_may_not_share_an_id() -> None:
    with pytest.raises(ConfigError, match="share the id"):
        Keyring([new_key("same"), new_key("same")])


def test_key_files_reload_on_request_and_keep_the_old_keys_if_the_new_file_is_bad(tmp_path) -> None:
    path = tmp_path / "cluster.keys"
    old, new = new_key("old"), new_key("new")
    path.write_text(dump_keys([old]))
    files = KeyFiles([path])
    assert files.get("old") == old and files.get("new") is None
    path.write_text(dump_keys([old, new]))
    assert files.reload() and files.get("new") == new
    path.write_text("broken [")
    assert not files.reload() and files.get("new") == new
    with pytest.raises(ConfigError):
        KeyFiles([path])


def test_key_files_notice_a_changed_file(tmp_path) -> None:
    path = tmp_path / "cluster.keys"
    path.write_text(dump_keys([new_key("a")]))
    files = KeyFiles([path])
    assert not files.refresh()
    path.write_text(dump_keys([new_key("b")]))
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the file system's resolution
    assert files.refresh() and files.get("b") is not None and files.get("a") is None


def test_a_key_file_nested_too_deep_or_too_large_is_a_config_error_not_a_crash(tmp_path) -> None:
    # tomllib recursed into 5,000 nested arrays (RecursionError), and /dev/zero was read
    # until memory ran out (MemoryError): both were tracebacks from `cellframe keys list`.
    nested = tmp_path / "nested.keys"
    nested.write_text("a = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_keys(nested)
    big = tmp_path / "big.keys"
    big.write_text(dump_keys([new_key("a")]) + "#" * keys_module.MAX_KEY_FILE_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        load_keys(big)
    with pytest.raises(ConfigError, match="larger than"):
        load_keys("/dev/zero")


def test_a_secret_file_too_large_is_a_config_error_not_a_crash(tmp_path) -> None:
    # The cluster secret was read whole: /dev/zero until memory ran out.
    with pytest.raises(ConfigError, match="larger than"):
        load_secret(file="/dev/zero")


def test_a_key_or_secret_file_others_may_read_is_warned_of_once(tmp_path, caplog) -> None:
    path = tmp_path / "ops.keys"
    path.write_text(dump_keys([new_key("ops")]))
    secret = tmp_path / "cluster.secret"
    secret.write_text("s" * 40)
    for private in (path, secret):
        private.chmod(0o600)
    load_keys(path)
    load_secret(file=secret)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    for private in (path, secret):
        private.chmod(0o644)
    for _ in range(2):  # a node rereads its key files: one warning a file, not one a read
        load_keys(path)
        load_secret(file=secret)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2, warned
    assert all("mode 644" in w and "chmod 600" in w for w in warned), warned
    assert str(path) in warned[0] and str(secret) in warned[1], warned


@pytest.mark.parametrize("entry, message", [
    ("id = 'a'\nallow = ['host:web *']", "capability target 'host:web'"),
    ("id = 'a b'", "key id 'a b'"),
    ("id = 'a'\nkind = 'root'", "kind 'root'"),
    ("id = 'a'\nallow = [42]", "a capability is text"),
    ("id = 'a'", "key 'a' allows nothing"),
    ("id = 'a'\nkind = 'node'\nallow = []", "key 'a' allows nothing"),
])
def test_every_error_of_a_key_file_names_the_file(tmp_path, entry, message) -> None:
    path = tmp_path / "third.keys"
    path.write_text(f"[[key]]\n{entry}\nsecret = '{'00' * 32}'\n")
    with pytest.raises(ConfigError, match=f"key file '{re.escape(str(path))}': .*{message}"):
        load_keys(path)


def test_one_id_with_two_keys_in_two_files_names_both_files(tmp_path) -> None:
    # "two different keys share the id 'ops'": which of a node's --keys files? And `keys
    # list a b` showed both without a word, where a node refused the pair.
    first, second = tmp_path / "a.keys", tmp_path / "b.keys"
    first.write_text(dump_keys([new_key("ops")]))
    second.write_text(dump_keys([new_key("ops")]))
    with pytest.raises(ConfigError, match=f"key 'ops' is in '{re.escape(str(first))}' and in "
                                          f"'{re.escape(str(second))}', with another secret"):
        KeyFiles([first, second])


def test_a_changed_key_file_that_fails_to_read_says_why_once_and_keeps_the_old_keys(
        tmp_path) -> None:
    # refresh() returned False, the same as "unchanged": a node whose key file was saved
    # broken (a revocation, say) logged nothing and kept the revoked key without a word.
    path = tmp_path / "cluster.keys"
    old, new = new_key("old"), new_key("new")
    path.write_text(dump_keys([old]))
    files = KeyFiles([path], settle=0)
    path.write_text(dump_keys([old])[:40])  # caught mid-write
    with pytest.raises(ConfigError, match=f"key file '{re.escape(str(path))}'"):
        files.refresh()
    assert not files.refresh()  # said once for this version of the file, not every poll
    assert files.get("old") == old
    path.unlink()  # removed, then written anew (not atomic): said once too
    with pytest.raises(ConfigError, match="No such file"):
        files.refresh()
    assert not files.refresh() and files.get("old") == old
    path.write_text(dump_keys([new]))
    assert files.refresh() and files.get("new") == new and files.get("old") is None


def test_a_key_file_still_being_written_is_read_once_it_rests(tmp_path) -> None:
    # Its first [[key]] of two parses: read mid-write, it revoked the second key for a poll.
    path = tmp_path / "cluster.keys"
    first, second = new_key("first"), new_key("second")
    path.write_text(dump_keys([first, second]))
    os.utime(path, ns=(1, 1))
    files = KeyFiles([path], settle=30)
    path.write_text(dump_keys([first]))  # the writer has not reached the second key yet
    assert not files.refresh() and files.get("second") == second
    path.write_text(dump_keys([first, second, new_key("third")]))
    now = path.stat().st_mtime_ns - 31 * 10**9
    os.utime(path, ns=(now, now))  # rested
    assert files.refresh() and files.get("third") is not None and files.get("second") == second
    moved = tmp_path / "staged.keys"  # a file moved into place is read at once
    moved.write_text(dump_keys([first]))
    os.utime(moved, ns=(now, now))
    os.replace(moved, path)
    assert files.refresh() and files.get("second") is None


def test_a_key_file_replaced_whole_with_the_same_size_and_time_is_noticed(tmp_path) -> None:
    # A secret rotated in place keeps the file's size; a copy that keeps its source's
    # modification time (cp -p, rsync -t) then left the old secret in force.
    path, staged = tmp_path / "cluster.keys", tmp_path / "cluster.keys.new"
    path.write_text(dump_keys([new_key("a")]))
    files = KeyFiles([path], settle=0)
    before = path.stat()
    rotated = new_key("a")
    staged.write_text(dump_keys([rotated]))
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(staged, path)
    assert files.refresh() and files.get("a") == rotated


# -- the replay cache ----------------------------------------------------------------------------


def test_the_replay_cache_refuses_a_second_sight_until_the_expiry() -> None:
    cache = ReplayCache()
    assert not cache.seen(("k", "m-1"), expires=100.0, now=0.0)
    assert cache.seen(("k", "m-1"), expires=100.0, now=50.0)
    assert not cache.seen(("k", "m-2"), expires=100.0, now=50.0)
    assert not cache.seen(("k", "m-3"), expires=300.0, now=150.0)  # past 100: both forgotten
    assert len(cache) == 1


def test_the_replay_cache_never_holds_more_than_its_capacity() -> None:
    cache = ReplayCache(capacity=100)
    for i in range(1000):
        cache.seen(("k", str(i)), expires=1000.0 + i, now=0.0)
    assert len(cache) == 100 and cache.evicted == 900
    assert cache.seen(("k", "999"), expires=1999.0, now=0.0)  # the newest are kept
    assert not cache.seen(("k", "0"), expires=1000.0, now=0.0)


def test_the_replay_cache_holds_one_lifes_messages_at_a_steady_rate() -> None:
    cache, life = ReplayCache(), 300.0
    for second in range(2000):  # 10 messages a second for 2000 s, each living 300 s
        for i in range(10):
            cache.seen(("k", f"{second}-{i}"), expires=second + life, now=float(second))
    assert len(cache) <= 10 * (life + 1) and cache.evicted == 0


# -- node keys and node-only verbs ---------------------------------------------------------------


@pytest.mark.parametrize("key, speaker", [
    ("heartbeat.web-01", "web-01"), ("log.web-01.info", "web-01"), ("event.audit.web-01", "web-01"),
    ("membership.leave.web-01", "web-01"), ("membership.claim.web-01", "web-01"),
    ("membership.announce.web-01", "web-01"), ("membership.down.web-01", None),
    ("probe.web-01", None), ("cell.web-01", None), ("node.web-01", None), ("event.x", None),
    ("membership", None),
])
def test_the_routing_keys_a_node_speaks_on_name_it(key, speaker) -> None:
    assert speaker_of(key) == speaker


def test_a_node_key_bound_to_a_node_speaks_for_it_alone() -> None:
    bound, cluster = new_key("k1", kind="node", node="web-01"), new_key("k2", kind="node")
    assert bound.speaks_for("web-01") and not bound.speaks_for("db-01")
    assert cluster.speaks_for("db-01") and not new_key("ops").speaks_for("web-01")
    assert "node=web-01" in repr(bound)


def test_a_node_refuses_to_start_with_a_key_bound_to_another_node() -> None:
    signer = Signer(new_key("web-01", kind="node", node="web-01"))
    with pytest.raises(ConfigError, match="speaks for node 'web-01'.*--for-node db-01"):
        Node("db-01", transport=MemoryBroker().connect(), signer=signer, watch_config=False)


def test_cells_node_verbs_must_be_verbs_they_declare() -> None:
    with pytest.raises(StateMachineError, match="not verbs of its machine"):
        class Typo(Cell):
            node_verbs = {"replicat": None}

            @transition("replicate")
            def replicate(self) -> None: ...


def test_a_node_verb_declared_twice_must_name_its_speaker_alike() -> None:
    assert nodeverbs.DECLARED["heartbeat"] is Keyword("node")
    with pytest.raises(StateMachineError, match="Membership declared 'node'"):
        class Liar(Cell):
            node_verbs = {"heartbeat": "by"}

            @transition("heartbeat")
            def heartbeat(self, **extra: object) -> None: ...


@pytest.mark.parametrize("text, calls", [
    ('(set-weight :backend "b" :weight 3)', []),
    ('(do (add 1) (note (total)))', ["add", "note", "total"]),
    ('(add (+ 1 (count (list 1 2))))', []),  # built-ins call no verb
    ("(note '(replicate :rows ()))", []),  # quoted: data
    ('(let ((replicate 1) (n (total))) (add n))', ["total", "add"]),  # a binding's name is no call
    ('(note ((total) 1))', []),  # a head that is no symbol: the evaluator calls nothing there
    ('(if (ready) (add 1) (when (idle) (claim :node "a")))', ["ready", "add", "idle", "claim"]),
])
def test_the_verbs_a_message_calls_inside_are_read_from_its_data(text, calls) -> None:
    from cellframe.language.calls import calls_within
    from cellframe.language.reader import read
    assert [form[0].name for form in calls_within(read(text))] == calls


def test_cells_shared_and_local_verbs_must_be_verbs_they_declare() -> None:
    for attr, value in (("shared_verbs", {"set-weigth": "node"}), ("local_verbs", ("rerout",))):
        with pytest.raises(StateMachineError, match=f"{attr} .* are not verbs of its machine"):
            type("Typo", (Cell,), {attr: value, "set_weight": transition("set-weight")(
                lambda self, **extra: None)})


def test_a_verb_is_declared_node_only_shared_or_local_by_every_class_alike() -> None:
    from cellframe.roles import ProxyCell  # noqa: F401  (declares set-weight shared, reroute local)
    assert nodeverbs.SPEAKERS["set-weight"] is Keyword("node")
    assert "set-weight" not in nodeverbs.DECLARED  # operators send it too
    assert "reroute" in nodeverbs.LOCAL and "reroute" in nodeverbs.DECLARED
    with pytest.raises(StateMachineError, match="ProxyCell declared 'node' \\(a shared verb\\)"):
        type("Rival", (Cell,), {"node_verbs": {"set-weight": "node"}, "set_weight": transition(
            "set-weight")(lambda self, **extra: None)})
