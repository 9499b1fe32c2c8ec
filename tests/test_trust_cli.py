"""Secure by default on the command line: a node needs keys (or says --insecure) and a zone
(or says --example), ``cellframe keys`` makes and lists keys without showing a secret, and
``send`` with a wrong key fails with one clear line. Node processes on the real broker reload
their key files on SIGHUP."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cellframe.cli.failure import CliError
from cellframe.cli.main import main
from cellframe.cli.trust import make_signer
from cellframe.client import Client
from cellframe.node import process
from cellframe.node.node import Node
from cellframe.testing import wait_for
from cellframe.wire.keys import Key, KeyFiles, dump_keys, load_keys, new_key
from cellframe.wire.signing import Signer
from tests.cli_support import write_private
from tests.node_support import registry, replies_matching

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={"CELLFRAME_SECRET": "", "CELLFRAME_KEY": "",
                                                     "CELLFRAME_KEYS": "", **(env or {})})


def _node_process(name: str, amqp_names: Any, out: Any, *trust: str) -> subprocess.Popen[bytes]:
    """``cellframe node NAME --example`` on the test's broker names, with ``trust`` (its key
    options), writing to ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "cellframe", "-v", "node", name, "--amqp", amqp_names.url,
         "--example", *trust, "--exchange", amqp_names.exchange,
         "--queue-prefix", amqp_names.queue_prefix],
        stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "CELLFRAME_SECRET": "", "PYTHONPATH": str(REPO)})


def test_a_node_without_keys_refuses_to_start_and_says_how_to_give_them() -> None:
    result = invoke("node", "n1", "--example", "--amqp", "amqp://nowhere.invalid/")
    assert result.exit_code == 2
    assert "no keys: give --keys FILE" in result.stderr and "--insecure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_node_without_zone_or_dns_refuses_to_start(tmp_path) -> None:
    result = invoke("node", "n1", "--insecure", "--amqp", "amqp://nowhere.invalid/")
    assert result.exit_code == 2
    assert "no cluster configuration: give --zone FILE or --dns HOST:PORT" in result.stderr


def test_insecure_with_keys_is_a_contradiction(tmp_path) -> None:
    key_file = tmp_path / "n.keys"
    write_private(key_file, dump_keys([new_key("nodes", kind="node")]))
    result = invoke("node", "n1", "--example", "--insecure", "--keys", str(key_file))
    assert result.exit_code == 2 and "--insecure contradicts" in result.stderr


def test_keys_new_writes_a_private_file_and_never_overwrites_it(tmp_path) -> None:
    path = tmp_path / "web-ops.key"
    result = invoke("keys", "new", "web-ops", "--allow", "role:web set-weight",
                    "--allow", "node:web-* status", "-o", str(path))
    assert result.exit_code == 0, result.output
    assert "operator key web-ops" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [key] = load_keys(path)
    assert key.allows("role.web", "set-weight") and not key.allows("role.web", "differentiate")
    again = invoke("keys", "new", "web-ops", "-o", str(path))
    assert again.exit_code == 1 and "not overwritten" in again.stderr
    assert load_keys(path) == [key]


def test_keys_new_for_node_writes_a_node_key_that_speaks_for_that_node_alone(tmp_path) -> None:
    path = tmp_path / "web-01.key"
    result = invoke("keys", "new", "web-01", "--for-node", "web-01", "-o", str(path))
    assert result.exit_code == 0, result.output
    assert "node key web-01 for node web-01" in result.stdout
    [key] = load_keys(path)
    assert key.kind == "node" and key.node == "web-01" and key.speaks_for("web-01")
    bad = invoke("keys", "new", "x", "--for-node", "web.01", "-o", str(tmp_path / "x.key"))
    assert bad.exit_code == 1 and "node 'web.01'" in bad.stderr


def test_a_node_given_key_files_signs_with_the_key_bound_to_it(tmp_path) -> None:
    keys = [new_key("nodes", kind="node"), new_key("db-01", kind="node", node="db-01"),
            new_key("web-01", kind="node", node="web-01")]
    path = tmp_path / "cluster.keys"
    write_private(path, dump_keys(keys))
    assert make_signer(None, key_files=[str(path)], node="web-01").key.id == "web-01"
    assert make_signer(None, key_files=[str(path)], node="mail-01").key.id == "nodes"
    write_private(path, dump_keys(keys[1:]))
    with pytest.raises(CliError, match="no node key in the key files may sign for node mail-01"):
        make_signer(None, key_files=[str(path)], node="mail-01")


def test_keys_list_shows_ids_and_capabilities_never_secrets(tmp_path) -> None:
    keys = [new_key("ops-1", ["role:web set-weight"]), new_key("nodes-1", kind="node"),
            new_key("web-01", kind="node", node="web-01")]
    path = tmp_path / "cluster.keys"
    write_private(path, dump_keys(keys))
    result = invoke("keys", "list", str(path))
    assert result.exit_code == 0
    assert "ops-1\toperator\trole:web set-weight" in result.stdout
    assert "nodes-1\tnode\tall *" in result.stdout
    assert "web-01\tnode (web-01)\tall *" in result.stdout
    assert all(k.secret.hex() not in result.stdout for k in keys)


def start_signed_node(amqp_names: Any, tmp_path: Path, *keys: Key) -> Node:
    """Node k-01 of role tally, signing with a node key and trusting it and ``keys`` (the
    key file ``cluster.keys``), started."""
    node_key = new_key("nodes", kind="node")
    keys_file = tmp_path / "cluster.keys"
    write_private(keys_file, dump_keys([node_key, *keys]))
    signer = Signer(node_key, keyring=KeyFiles([keys_file]), exchange=amqp_names.exchange)
    return Node("k-01", transport=amqp_names.connect(), signer=signer, role="tally",
                registry=registry(), queue_prefix=amqp_names.queue_prefix,
                watch_config=False).start()


@pytest.mark.amqp
def test_send_with_a_wrong_key_exits_non_zero_with_one_clear_line(amqp_names, tmp_path) -> None:
    ops, stranger = new_key("ops"), new_key("ops")
    node = start_signed_node(amqp_names, tmp_path, ops)
    try:
        options = ["--amqp", amqp_names.url, "--exchange", amqp_names.exchange,
                   "--queue-prefix", amqp_names.queue_prefix, "--wait", "10"]
        good, bad = tmp_path / "ops.key", tmp_path / "stranger.key"
        write_private(good, dump_keys([ops]))
        write_private(bad, dump_keys([stranger]))
        result = invoke("send", "node:k-01", "(ping)", "--key", str(good), *options[:-2],
                        "--wait", "1")
        assert result.exit_code == 0, result.stderr
        assert "(pong" in result.stdout
        result = invoke("send", "node:k-01", "(ping)", "--key", str(bad), *options)
        assert result.exit_code == 2
        [line] = [x for x in result.stderr.strip().splitlines() if "k-01: refused:" not in x]
        assert "node k-01 refused our message (bad-signature): a wrong or unknown key?" in line
        assert node.counters.refused == {"bad-signature": 1}
    finally:
        node.stop()


@pytest.mark.amqp
def test_a_node_process_reloads_its_key_files_on_sighup(amqp_names, tmp_path) -> None:
    node_key, old, new = new_key("nodes", kind="node"), new_key("ops-old"), new_key("ops-new")
    keys_file = tmp_path / "cluster.keys"
    write_private(keys_file, dump_keys([node_key, old]))
    out = (tmp_path / "node.out").open("wb")
    proc = _node_process("hup-01", amqp_names, out, "--keys", str(keys_file))
    clients: list[Client] = []

    def client(key: Any) -> Client:
        made = Client(amqp_names.connect(), queue_prefix=amqp_names.queue_prefix,
                      signer=Signer(key, exchange=amqp_names.exchange))
        clients.append(made)
        return made

    def log() -> str:
        return (tmp_path / "node.out").read_text(errors="replace")

    try:
        wait_for(lambda: "ready as" in log(), 30, what="the node process ready", show=log)
        with_old, with_new = client(old), client(new)
        with_old.send("node.hup-01", "(ping)")
        replies_matching(with_old, "pong", 1)
        # Rotation: the new key beside the old one, then the old one revoked.
        write_private(keys_file, dump_keys([node_key, old, new]))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keys reloaded (SIGHUP)" in log(), 30, what="the reload", show=log)
        with_new.send("node.hup-01", "(ping)")
        replies_matching(with_new, "pong", 1)
        write_private(keys_file, dump_keys([node_key, new]))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log().count("keys reloaded (SIGHUP)") == 2, 30, what="the second reload",
                 show=log)
        with_old.send("node.hup-01", "(ping)")
        wait_for(lambda: with_old.refused, 30, what="the revoked key's refusal notice")
        assert "unknown or revoked key 'ops-old'" in log()
    finally:
        for made in clients:
            made.close()
        proc.terminate()
        proc.wait(20)
        out.close()


def test_an_insecure_node_warns_at_start_and_again_every_period(monkeypatch, caplog) -> None:
    monkeypatch.setattr(process, "KEY_FILE_POLL", 0.01)
    monkeypatch.setattr(process, "INSECURE_WARNING_EVERY", 0.05)
    stop = threading.Event()
    caplog.set_level(logging.WARNING, logger="cellframe.node.process")
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    process._serve("lax-01", None, stop)
    warnings = [r for r in caplog.records if "runs INSECURE" in r.getMessage()]
    assert len(warnings) >= 3  # at start, then about every 0.05 s for 0.5 s


@contextmanager
def serving_keys(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                 signer: Signer) -> Iterator[None]:
    """``cellframe node``'s key-file watch (``process._serve``) for node k-01 on a thread,
    polling every 10 ms, its log captured at INFO; stopped on leaving."""
    monkeypatch.setattr(process, "KEY_FILE_POLL", 0.01)
    caplog.set_level(logging.INFO, logger="cellframe.node.process")
    stop = threading.Event()
    serving = threading.Thread(target=process._serve, args=("k-01", signer, stop))
    serving.start()
    try:
        yield
    finally:
        stop.set()
        serving.join(5)


def test_a_node_says_once_why_a_changed_key_file_was_not_reloaded(monkeypatch, tmp_path,
                                                                   caplog) -> None:
    # It logged nothing: a key file saved broken (a revocation, say) left the revoked key in
    # force without a word, and a SIGHUP's error did not say which file or what was wrong.
    path = tmp_path / "cluster.keys"
    node_key, ops = new_key("nodes", kind="node"), new_key("ops")
    write_private(path, dump_keys([node_key, ops]))
    key_files = KeyFiles([path], settle=0)

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    with serving_keys(monkeypatch, caplog, Signer(node_key, keyring=key_files)):
        write_private(path, dump_keys([node_key]) + "[[key]]\nid = 'x'\nsecret = 'zz'\n")
        wait_for(lambda: lines("NOT reloaded"), 5, what="the error line")
        process._reload(key_files, "SIGHUP")
        write_private(path, dump_keys([node_key]))
        wait_for(lambda: lines("changed, reloaded"), 5, what="the reload of the mended file")
    [changed, hup] = lines("NOT reloaded")
    assert f"key file '{path}'" in changed and "must be hex" in changed
    assert changed.startswith("node k-01: key files changed but NOT reloaded") and "old keys" in changed
    assert hup.startswith("keys NOT reloaded (SIGHUP): key file") and "must be hex" in hup
    assert key_files.get("ops") is None


@pytest.mark.parametrize("command", [
    ["keys", "list", "{file}"],
    ["send", "node:k-01", "(ping)", "--key", "{file}"],
    ["status", "--key", "{file}"],
    ["node", "k-01", "--example", "--keys", "{file}", "--amqp", "amqp://nowhere.invalid/"],
])
@pytest.mark.parametrize("content", [b"a = " + b"[" * 5000 + b"]" * 5000, b"\xff\xfe\x00garbage",
                                     b"", b"[[key]]\nid = 'a'\nsecret = ''\n", None])
def test_a_garbage_key_file_is_one_line_and_a_non_zero_exit_for_every_command(
        tmp_path, command, content) -> None:
    path = tmp_path / "garbage.key"
    if content is not None:  # None: no such file
        write_private(path, content)
    result = invoke(*(arg.format(file=path) for arg in command))
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: key file '{path}'") and line.count(str(path)) == 1, line


@pytest.mark.parametrize("options, named", [
    (["--key", "{file}"], "--key"),
    (["--secret-file", "{file}"], "--secret-file"),
    (["--tls-ca", "{file}"], "--tls-ca"),
    (["--dns", "127.0.0.1:53", "--exchange", "x"], "--dns, --exchange"),
])
def test_repl_without_amqp_refuses_the_options_of_a_remote_cluster_rather_than_ignore_them(
        tmp_path, options, named) -> None:
    # Without --amqp the REPL starts a local cluster with a key of its own: `repl --key
    # ops.key` (the --amqp forgotten) talked to that toy cluster, the key unread.
    path = tmp_path / "ops.key"
    write_private(path, dump_keys([new_key("ops")]))
    result = invoke("repl", *(o.format(file=path) for o in options))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert f"{named} without --amqp" in line, line


@pytest.mark.parametrize("own_in_files", ["absent", "another secret"])
def test_a_node_refuses_to_start_signing_with_a_key_its_key_files_do_not_hold(
        tmp_path, own_in_files) -> None:
    # It started, and refused its own heartbeats and call-backs as signed with an unknown key.
    own = new_key("web-01", kind="node", node="web-01")
    cluster = [new_key("ops")]
    if own_in_files == "another secret":
        cluster.append(new_key("web-01", kind="node", node="web-01"))
    write_private(tmp_path / "own.key", dump_keys([own]))
    write_private(tmp_path / "cluster.keys", dump_keys(cluster))
    result = invoke("node", "web-01", "--example", "--key", str(tmp_path / "own.key"),
                    "--keys", str(tmp_path / "cluster.keys"), "--amqp", "amqp://nowhere.invalid/")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "signs with key 'web-01', which its --keys files do not hold" in line, line


def test_a_node_warns_when_its_key_files_no_longer_hold_the_key_it_signs_with(
        monkeypatch, tmp_path, caplog) -> None:
    # A reload that dropped the node's own key (or changed its secret) was logged as a plain
    # "keys reloaded": the node then refused every message of its own, and said why only
    # message by message.
    path = tmp_path / "cluster.keys"
    own, other = new_key("k-01", kind="node", node="k-01"), new_key("k-02", kind="node")
    write_private(path, dump_keys([own, other]))
    key_files = KeyFiles([path], settle=0)
    with serving_keys(monkeypatch, caplog, Signer(own, keyring=key_files)):
        write_private(path, dump_keys([other]))
        wait_for(lambda: any("no longer hold" in r.getMessage() for r in caplog.records), 5,
                 what="the warning")
    [warning] = [r for r in caplog.records if "no longer hold" in r.getMessage()]
    assert warning.levelno == logging.ERROR
    assert "node k-01 signs with key 'k-01', which its key files no longer hold" in warning.getMessage()


def test_keys_list_refuses_files_that_give_one_id_two_keys_as_a_node_would(tmp_path) -> None:
    first, second = tmp_path / "a.keys", tmp_path / "b.keys"
    write_private(first, dump_keys([new_key("ops")]))
    write_private(second, dump_keys([new_key("ops")]))
    result = invoke("keys", "list", str(first), str(second))
    assert result.exit_code != 0
    [line] = result.stderr.strip().splitlines()
    assert f"key 'ops' is in '{first}' and in '{second}'" in line, line


@pytest.mark.amqp
def test_a_key_without_the_capability_is_told_at_once_by_send_and_status(amqp_names,
                                                                        tmp_path) -> None:
    # send waited its whole --wait and exited 3 ("1 of 1 call-backs were errors"), and
    # status said "no node answered ... same cluster secret?" though the node had answered
    # that the key may not send (status).
    ops, ops_file = new_key("ops", ["node:other-* status"]), tmp_path / "ops.key"
    write_private(ops_file, dump_keys([ops]))
    node = start_signed_node(amqp_names, tmp_path, ops)
    try:
        options = ["--amqp", amqp_names.url, "--exchange", amqp_names.exchange,
                   "--queue-prefix", amqp_names.queue_prefix, "--key", str(ops_file)]
        started = time.monotonic()
        sent = invoke("send", "node:k-01", "(ping)", "--wait", "30", *options)
        assert sent.exit_code == 2 and time.monotonic() - started < 10
        [line] = [x for x in sent.stderr.strip().splitlines() if "k-01: refused:" not in x]
        assert line == ("error: node k-01 refused our message: key 'ops' may not send "
                        "(ping ...) to 'node.k-01'"), line
        status = invoke("status", "--window", "1", *options)
        assert status.exit_code == 2
        [line] = [x for x in status.stderr.strip().splitlines() if "k-01: refused:" not in x]
        assert line == ("Error: node k-01 refused our message: key 'ops' may not send "
                        "(status ...) to 'all'"), line
    finally:
        node.stop()


@pytest.mark.amqp
def test_a_node_without_key_files_survives_sighup_and_says_there_is_nothing_to_reload(
        amqp_names, tmp_path) -> None:
    # Only a node given --keys handled SIGHUP: one run with --secret-file, --key or
    # --insecure took the default action and died at once (no leave, no clean stop), so a
    # `kill -HUP` sent to every node after a key rotation stopped some of them.
    secret = tmp_path / "cluster.secret"
    write_private(secret, "s" * 32)
    out = (tmp_path / "node.out").open("wb")
    proc = _node_process("hup-02", amqp_names, out, "--secret-file", str(secret))

    def log() -> str:
        return (tmp_path / "node.out").read_text(errors="replace")

    try:
        wait_for(lambda: "ready as" in log(), 30, what="the node process ready", show=log)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: no key files to reload" in log() or proc.poll() is not None,
                 10, what="the node's answer to SIGHUP", show=log)
        assert proc.poll() is None, log()
    finally:
        proc.terminate()
        proc.wait(20)
        out.close()


@pytest.mark.parametrize("command", [["send", "node:k-01", "(ping)"], ["status"],
                                     ["node", "k-01", "--example"]])
@pytest.mark.parametrize("key_from_environment", [False, True])
def test_two_keys_to_sign_with_are_refused_rather_than_one_silently_chosen(
        tmp_path, command, key_from_environment) -> None:
    # --key won over --secret-file without a word, even when it came from $CELLFRAME_KEY and
    # the --secret-file was typed on the command line.
    key_file, secret = tmp_path / "ops.key", tmp_path / "cluster.secret"
    write_private(key_file, dump_keys([new_key("ops", kind="node")]))
    write_private(secret, "s" * 32)
    key_args, env = (([], {"CELLFRAME_KEY": str(key_file)}) if key_from_environment
                     else (["--key", str(key_file)], {}))
    result = invoke(*command, *key_args, "--secret-file", str(secret), "--amqp",
                    "amqp://nowhere.invalid/", env=env)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "--key (or $CELLFRAME_KEY) and --secret-file both name a key to sign with" in line, line
