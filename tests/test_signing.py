"""Signer: only messages signed by a known key, for the routing key they arrive on, and alive, are trusted."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError, InputTooLargeError, RefusedError
from cellframe.testing import Collector
from cellframe.wire.envelope import Envelope
from cellframe.wire.keys import Key, Keyring, new_key
from cellframe.wire.signing import (
    DEFAULT_TTL,
    EXPIRES_HEADER,
    KEY_HEADER,
    REASONS,
    SIGNATURE_HEADER,
    TARGET_HEADER,
    Signer,
    canonical_bytes,
    check_size,
    load_secret,
)

SECRET = b"correct horse battery staple"
NOW = 1_700_000_000.0


@pytest.fixture
def signer() -> Signer:
    return Signer(SECRET)


def message(**fields) -> Envelope:
    defaults = {"body": b"(set-config :replicas 3)", "message_id": "m-1", "timestamp": NOW,
                "reply_to": "reply.repl-1", "sender": "ops-01"}
    return Envelope(**{**defaults, **fields})


TARGET = "cell.a-01"


def test_a_signed_message_verifies_for_its_target(signer):
    key = signer.verify(signer.sign(message(), TARGET), TARGET, now=NOW + 1)
    assert key.id == "cluster" and key.kind == "node"


def test_signing_leaves_the_original_envelope_alone(signer):
    original = message(headers={"k": "v"})
    signed = signer.sign(original, TARGET)
    assert original.headers == {"k": "v"}
    assert signed.headers["k"] == "v" and len(signed.headers[SIGNATURE_HEADER]) == 64
    assert signed.headers[KEY_HEADER] == "cluster" and signed.headers[TARGET_HEADER] == TARGET
    assert signed.headers[EXPIRES_HEADER] == NOW + DEFAULT_TTL


def refusal(signer, envelope, target=TARGET, now=NOW) -> RefusedError:
    with pytest.raises(RefusedError) as caught:
        signer.verify(envelope, target, now=now)
    assert caught.value.reason in REASONS
    return caught.value


def test_an_unsigned_message_is_refused(signer):
    assert refusal(signer, message()).reason == "unsigned"


@pytest.mark.parametrize("signature", ["0" * 64, "f" * 64])
def test_a_forged_signature_is_refused(signer, signature):
    signed = signer.sign(message(), TARGET)
    signed.headers[SIGNATURE_HEADER] = signature
    error = refusal(signer, signed)
    assert error.reason == "bad-signature" and "forged" in str(error)


@pytest.mark.parametrize("signature", ["abc", "g" * 64, "é" * 64, b"0" * 64, 42, None])
def test_a_malformed_signature_is_refused(signer, signature):
    signed = signer.sign(message(), TARGET)
    signed.headers[SIGNATURE_HEADER] = signature
    assert refusal(signer, signed).reason in ("bad-signature", "unsigned")


@pytest.mark.parametrize("header, value", [
    (KEY_HEADER, None), (KEY_HEADER, 7), (KEY_HEADER, "x" * 10_000), (EXPIRES_HEADER, "soon"),
    (EXPIRES_HEADER, None), (EXPIRES_HEADER, True), (TARGET_HEADER, 3), (TARGET_HEADER, b"cell.a-01"),
])
def test_absurd_headers_are_refused_as_bad_signatures(signer, header, value):
    signed = signer.sign(message(), TARGET)
    signed.headers[header] = value
    assert refusal(signer, signed).reason == "bad-signature"


@pytest.mark.parametrize("change", [
    {"body": b"(set-config :replicas 0)"},
    {"message_id": "m-2"},
    {"timestamp": NOW + 0.001},
    {"reply_to": "reply.attacker"},
    {"reply_to": None},
    {"sender": "web-01"},
], ids=["body", "id", "time", "reply_to", "reply_to-removed", "sender"])
def test_tampering_with_any_covered_field_is_detected(signer, change):
    tampered = dataclasses.replace(signer.sign(message(), TARGET), **change)
    error = refusal(signer, tampered)
    assert error.reason == "bad-signature" and "forged or altered" in str(error)


def test_a_message_replayed_to_another_target_is_refused(signer):
    signed = signer.sign(message(), TARGET)
    assert refusal(signer, signed, target="cell.b-01").reason == "wrong-target"
    retargeted = dataclasses.replace(signed, headers={**signed.headers, TARGET_HEADER: "cell.b-01"})
    assert refusal(signer, retargeted, target="cell.b-01").reason == "bad-signature"


def test_a_message_through_another_exchange_does_not_verify():
    ours = Signer(SECRET, exchange="cluster-a.control")
    theirs = Signer(SECRET, exchange="cluster-b.control")
    assert refusal(ours, theirs.sign(message(), TARGET)).reason == "bad-signature"


def test_a_later_expiry_is_detected(signer):
    signed = signer.sign(message(), TARGET)
    signed.headers[EXPIRES_HEADER] += 1000
    assert refusal(signer, signed).reason == "bad-signature"


def test_bytes_cannot_shift_between_fields(signer):
    a = signer.signature(message(reply_to="ab", sender="c"), TARGET)
    b = signer.signature(message(reply_to="a", sender="bc"), TARGET)
    assert a != b
    assert (signer.signature(message(sender=None), TARGET)
            != signer.signature(message(sender=""), TARGET))
    assert signer.signature(message(), None) != signer.signature(message(), "")


def test_headers_added_after_signing_do_not_break_the_signature(signer):
    signed = signer.sign(message(), TARGET)
    signed.headers["x-cellframe-reason"] = "dead-lettered by web-01"
    signer.verify(signed, TARGET, now=NOW)


def test_a_message_past_its_expiry_is_refused(signer):
    signed = signer.sign(message(), TARGET, ttl=10)
    signer.verify(signed, TARGET, now=NOW + 9.9)
    error = refusal(signer, signed, now=NOW + 11)
    assert error.reason == "expired" and "expired 1.0 s ago" in str(error)


def test_a_message_asking_to_live_longer_than_max_age_is_refused():
    signer = Signer(SECRET, max_age=60)
    long_lived = Signer(SECRET, max_age=3600, ttl=3600).sign(message(), TARGET)
    assert refusal(signer, long_lived).reason == "expired"


def test_a_message_from_the_future_is_refused_beyond_the_clock_skew(signer):
    signed = signer.sign(message(), TARGET)
    signer.verify(signed, TARGET, now=NOW - 29)
    error = refusal(signer, signed, now=NOW - 31)
    assert error.reason == "expired" and "in the future" in str(error)


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf])
def test_a_timestamp_that_is_not_a_time_is_refused(signer, timestamp):
    signed = signer.sign(message(timestamp=timestamp), TARGET)
    refusal(signer, signed)


def test_another_clusters_secret_does_not_verify(signer):
    theirs = Signer(b"another cluster's secret!")
    assert refusal(signer, theirs.sign(message(), TARGET)).reason == "bad-signature"


def test_a_key_not_in_the_keyring_is_refused_as_unknown_or_revoked():
    ops = new_key("ops-1")
    signer = Signer(None, keyring=Keyring([new_key("ops-2")]))
    error = refusal(signer, Signer(ops).sign(message(), TARGET))
    assert error.reason == "bad-signature" and "unknown or revoked key 'ops-1'" in str(error)


def test_two_keys_valid_at_once_both_verify_for_a_rotation():
    old, new = new_key("ops-old"), new_key("ops-new")
    verifier = Signer(None, keyring=Keyring([old, new]))
    for key in (old, new):
        assert verifier.verify(Signer(key).sign(message(), TARGET), TARGET, now=NOW) == key


def test_a_verify_only_signer_cannot_sign():
    with pytest.raises(ConfigError, match="no key to sign with"):
        Signer(None, keyring=Keyring()).sign(message(), TARGET)


def test_a_body_that_is_not_utf8_is_still_verifiable(signer):
    body = b"\xff\xfe\x00\xc3\x28" + bytes(range(256))
    signer.verify(signer.sign(message(body=body), TARGET), TARGET, now=NOW)


def test_an_oversized_message_is_refused_before_its_signature_is_checked():
    signer = Signer(SECRET, max_bytes=100)
    with pytest.raises(InputTooLargeError, match="101 bytes"):
        signer.verify(message(body=b"x" * 101), TARGET, now=NOW)  # unsigned, but size first
    signer.verify(signer.sign(message(body=b"x" * 100), TARGET), TARGET, now=NOW)
    with pytest.raises(InputTooLargeError):
        check_size(message(body=b"x" * 11), 10)
    with pytest.raises(InputTooLargeError):
        Signer(SECRET).verify(message(body=b"x" * 11), TARGET, now=NOW, max_bytes=10)


@pytest.mark.parametrize("secret", [b"short", "a str secret, not bytes", b""])
def test_a_weak_or_mistyped_secret_is_a_config_error(secret):
    with pytest.raises(ConfigError):
        Signer(secret)


def test_the_secret_never_appears_in_the_repr(signer):
    assert SECRET.decode() not in repr(signer)
    key = new_key("ops-1")
    assert key.secret.hex() not in repr(key) and str(key.secret) not in repr(key)


@settings(deadline=None, max_examples=150)
@given(body=st.binary(max_size=200), message_id=st.text(max_size=40),
       timestamp=st.floats(NOW - 100, NOW + 10), reply_to=st.none() | st.text(max_size=20),
       sender=st.none() | st.text(max_size=20), target=st.text(min_size=1, max_size=30),
       where=st.sampled_from(["body", "message_id", "reply_to", "sender", "target",
                              KEY_HEADER, TARGET_HEADER, SIGNATURE_HEADER]),
       position=st.integers(0, 10_000), byte=st.integers(1, 255))
def test_any_single_byte_change_to_a_signed_message_is_refused(
        body, message_id, timestamp, reply_to, sender, target, where, position, byte):
    signer = Signer(SECRET)
    signed = signer.sign(Envelope(body, message_id=message_id, timestamp=timestamp,
                                  reply_to=reply_to, sender=sender), target)
    signer.verify(signed, target, now=NOW)
    if where == "target":
        original = target
    elif where.startswith("x-"):
        original = signed.headers[where]
    else:
        original = getattr(signed, where)
    raw = original if isinstance(original, bytes) else (original or "").encode("utf-8", "surrogatepass")
    if raw:
        at = position % len(raw)
        changed = raw[:at] + bytes([raw[at] ^ byte]) + raw[at + 1:]
    else:
        changed = bytes([byte])
    value = changed if isinstance(original, bytes) else changed.decode("utf-8", "surrogateescape")
    if where == "target":
        with pytest.raises(RefusedError):
            signer.verify(signed, value, now=NOW)
        return
    if where.startswith("x-"):
        tampered = dataclasses.replace(signed, headers={**signed.headers, where: value})
    else:
        tampered = dataclasses.replace(signed, **{where: value})
    with pytest.raises(RefusedError):
        signer.verify(tampered, target, now=NOW)


def test_canonical_bytes_start_with_a_version_tag():
    assert canonical_bytes(message(), exchange="e", target=TARGET, key_id="k",
                           expires=NOW).startswith(b"cellframe-sig-v2")


@pytest.mark.parametrize("length", [16, 32, 63, 64, 65, 200])
def test_the_signature_is_the_standard_hmac_sha256_of_the_canonical_bytes(length):
    key = Key("k", bytes(range(256))[:length], kind="node")
    signer = Signer(key, exchange="cf.control")
    signed = signer.sign(message(correlation_id="c-1"), TARGET)
    canonical = canonical_bytes(signed, exchange="cf.control", target=TARGET, key_id="k",
                                expires=signed.headers[EXPIRES_HEADER])
    assert signed.headers[SIGNATURE_HEADER] == hmac.new(key.secret, canonical,
                                                        hashlib.sha256).hexdigest()


def test_signing_carries_every_envelope_field_over(signer):
    original = message(correlation_id="c-1", content_type="text/x", headers={"k": "v"})
    signed = signer.sign(original, TARGET)
    for field in dataclasses.fields(Envelope):
        if field.name != "headers":
            assert getattr(signed, field.name) == getattr(original, field.name), field.name


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
    t.publish("cell.signed", signer.sign(Envelope(b"\xff(binary)", reply_to="reply.x"), "cell.signed"))
    delivery = collector.wait(1)[0]
    signer.verify(delivery.envelope, delivery.routing_key)
