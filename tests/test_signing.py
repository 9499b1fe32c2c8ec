"""Signer: only messages signed with the cluster secret, recently, are trusted."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError, InputTooLargeError, SecurityError
from cellframe.testing import Collector
from cellframe.wire.envelope import Envelope
from cellframe.wire.signing import SIGNATURE_HEADER, Signer, canonical_bytes, check_size, load_secret

SECRET = b"correct horse battery staple"
NOW = 1_700_000_000.0


@pytest.fixture
def signer() -> Signer:
    return Signer(SECRET)


def message(**fields) -> Envelope:
    defaults = {"body": b"(set-config :replicas 3)", "message_id": "m-1", "timestamp": NOW,
                "reply_to": "reply.repl-1", "sender": "ops-01"}
    return Envelope(**{**defaults, **fields})


def test_a_signed_message_verifies(signer):
    signer.verify(signer.sign(message()), now=NOW + 1)


def test_signing_leaves_the_original_envelope_alone(signer):
    original = message(headers={"k": "v"})
    signed = signer.sign(original)
    assert original.headers == {"k": "v"}
    assert signed.headers["k"] == "v" and len(signed.headers[SIGNATURE_HEADER]) == 64


def test_an_unsigned_message_is_refused(signer):
    with pytest.raises(SecurityError, match="not signed"):
        signer.verify(message(), now=NOW)


@pytest.mark.parametrize("signature", ["0" * 64, "f" * 64])
def test_a_forged_signature_is_refused(signer, signature):
    with pytest.raises(SecurityError, match="forged"):
        signer.verify(message(headers={SIGNATURE_HEADER: signature}), now=NOW)


@pytest.mark.parametrize("signature", ["abc", "g" * 64, "é" * 64, b"0" * 64, 42, None])
def test_a_malformed_signature_is_refused(signer, signature):
    envelope = message(headers={SIGNATURE_HEADER: signature})
    with pytest.raises(SecurityError):
        signer.verify(envelope, now=NOW)


@pytest.mark.parametrize("change", [
    {"body": b"(set-config :replicas 0)"},
    {"message_id": "m-2"},
    {"timestamp": NOW + 0.001},
    {"reply_to": "reply.attacker"},
    {"reply_to": None},
    {"sender": "web-01"},
], ids=["body", "id", "time", "reply_to", "reply_to-removed", "sender"])
def test_tampering_with_any_covered_field_is_detected(signer, change):
    tampered = dataclasses.replace(signer.sign(message()), **change)
    with pytest.raises(SecurityError, match="forged or altered"):
        signer.verify(tampered, now=NOW)


def test_bytes_cannot_shift_between_fields(signer):
    a = signer.signature(message(reply_to="ab", sender="c"))
    b = signer.signature(message(reply_to="a", sender="bc"))
    assert a != b
    assert signer.signature(message(sender=None)) != signer.signature(message(sender=""))


def test_headers_added_after_signing_do_not_break_the_signature(signer):
    signed = signer.sign(message())
    signed.headers["x-cellframe-reason"] = "dead-lettered by web-01"
    signer.verify(signed, now=NOW)


def test_a_message_older_than_max_age_is_refused(signer):
    signed = signer.sign(message())
    signer.verify(signed, now=NOW + 299)
    with pytest.raises(SecurityError, match="301.0 s old"):
        signer.verify(signed, now=NOW + 301)
    with pytest.raises(SecurityError, match="older than max_age 10"):
        signer.verify(signed, now=NOW + 11, max_age=10)


def test_a_message_from_the_future_is_refused_beyond_the_clock_skew(signer):
    signed = signer.sign(message())
    signer.verify(signed, now=NOW - 29)
    with pytest.raises(SecurityError, match="in the future"):
        signer.verify(signed, now=NOW - 31)


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf])
def test_a_timestamp_that_is_not_a_time_is_refused(signer, timestamp):
    signed = signer.sign(message(timestamp=timestamp))
    with pytest.raises(SecurityError):
        signer.verify(signed, now=NOW)


def test_another_clusters_secret_does_not_verify(signer):
    theirs = Signer(b"another cluster's secret!")
    with pytest.raises(SecurityError, match="forged"):
        signer.verify(theirs.sign(message()), now=NOW)


def test_a_body_that_is_not_utf8_is_still_verifiable(signer):
    body = b"\xff\xfe\x00\xc3\x28" + bytes(range(256))
    signer.verify(signer.sign(message(body=body)), now=NOW)


def test_an_oversized_message_is_refused_before_its_signature_is_checked():
    signer = Signer(SECRET, max_bytes=100)
    with pytest.raises(InputTooLargeError, match="101 bytes"):
        signer.verify(message(body=b"x" * 101), now=NOW)  # unsigned, but size comes first
    signer.verify(signer.sign(message(body=b"x" * 100)), now=NOW)
    with pytest.raises(InputTooLargeError):
        check_size(message(body=b"x" * 11), 10)
    with pytest.raises(InputTooLargeError):
        Signer(SECRET).verify(message(body=b"x" * 11), now=NOW, max_bytes=10)


@pytest.mark.parametrize("secret", [b"short", "a str secret, not bytes", b""])
def test_a_weak_or_mistyped_secret_is_a_config_error(secret):
    with pytest.raises(ConfigError):
        Signer(secret)


def test_the_secret_never_appears_in_the_repr(signer):
    assert SECRET.decode() not in repr(signer)


@settings(deadline=None, max_examples=60)
@given(body=st.binary(max_size=200), message_id=st.text(max_size=40),
       timestamp=st.floats(NOW - 100, NOW + 10), reply_to=st.none() | st.text(max_size=20),
       sender=st.none() | st.text(max_size=20), field=st.sampled_from(
           ["body", "message_id", "timestamp", "reply_to", "sender"]))
def test_any_message_verifies_and_any_change_to_a_field_breaks_it(
        body, message_id, timestamp, reply_to, sender, field):
    signer = Signer(SECRET)
    signed = signer.sign(Envelope(body, message_id=message_id, timestamp=timestamp,
                                  reply_to=reply_to, sender=sender))
    signer.verify(signed, now=NOW)
    changed = {"body": body + b"!", "message_id": message_id + "!",
               "timestamp": timestamp + 1.0, "reply_to": (reply_to or "") + "!",
               "sender": None if sender else "!"}[field]
    with pytest.raises(SecurityError):
        signer.verify(dataclasses.replace(signed, **{field: changed}), now=NOW)


def test_canonical_bytes_start_with_a_version_tag():
    assert canonical_bytes(message()).startswith(b"cellframe-sig-v1")


# -- the secret ----------------------------------------------------------------------------


def test_the_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CELLFRAME_SECRET", "  a sixteen+ byte secret \n")
    assert load_secret() == b"a sixteen+ byte secret"


def test_a_missing_secret_is_a_config_error(monkeypatch):
    monkeypatch.delenv("CELLFRAME_SECRET", raising=False)
    with pytest.raises(ConfigError, match="CELLFRAME_SECRET"):
        load_secret()


def test_the_secret_comes_from_a_file_when_one_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLFRAME_SECRET", "the environment's secret")
    path = tmp_path / "secret"
    path.write_bytes(b"\x00\x01binary file secret bytes\n")
    assert load_secret(file=path) == b"\x00\x01binary file secret bytes"


def test_an_unreadable_or_short_secret_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(file=tmp_path / "missing")
    short = tmp_path / "short"
    short.write_bytes(b"tiny\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_secret(file=short)


# -- end to end ----------------------------------------------------------------------------


def test_a_signed_message_still_verifies_after_crossing_rabbitmq(amqp_connect, amqp_names):
    signer = Signer(SECRET)
    t = amqp_connect()
    queue = amqp_names.queue("signed")
    t.declare_queue(queue, exclusive=True)
    t.bind(queue, "cell.signed")
    collector = Collector()
    t.consume(queue, collector)
    t.publish("cell.signed", signer.sign(Envelope(b"\xff(binary)", reply_to="reply.x")))
    signer.verify(collector.wait(1)[0].envelope)
