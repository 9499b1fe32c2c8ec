"""Properties encoded in one pass are pika's bytes for ``to_amqp``'s properties, to the byte;
what the one pass does not take is ``to_amqp``'s, with its errors."""

from __future__ import annotations

import math
import secrets
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.errors import TransportError
from cellframe.language.symbols import Symbol
from cellframe.transports._amqp_wire import (
    EncodedProperties,
    encode_properties,
    from_amqp,
    to_amqp,
)
from cellframe.transports._amqp_writes import _basic_publish
from cellframe.wire.envelope import Envelope, envelope_for
from cellframe.wire.signing import Signer

FUZZ = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])

_text = st.text(max_size=20)
_long_or_short = st.one_of(_text, st.text(min_size=250, max_size=300),
                           st.text(alphabet="é€", min_size=80, max_size=140))
_header_values = st.one_of(st.none(), st.booleans(), _text, st.binary(max_size=8),
                           st.integers(-(2**63), 2**63), st.floats(), st.text(max_size=3).map(
                               lambda text: text + "\udc80"))
_envelopes = st.builds(
    Envelope, body=st.just(b"(ping)"), message_id=_long_or_short,
    timestamp=st.one_of(st.floats(), st.floats(0, 4e9), st.integers(-5, 2**64)),
    reply_to=st.none() | _long_or_short, sender=st.none() | _long_or_short,
    correlation_id=st.none() | _long_or_short,
    content_type=st.none() | _text | st.just("é" * 200),
    headers=st.dictionaries(st.one_of(st.text(min_size=1, max_size=12), st.just("x-cf-ts"),
                                      st.just("n" * 256), st.just("\udc80")),
                            _header_values, max_size=5))


def _by_pika(envelope: Envelope, persistent: bool) -> Any:
    try:
        return "bytes", b"".join(to_amqp(envelope, persistent=persistent).encode())
    except Exception as exc:  # what to_amqp refuses, or what pika cannot encode
        return "error", type(exc).__name__


def _one_pass(envelope: Envelope, persistent: bool) -> Any:
    try:
        properties = encode_properties(envelope, persistent=persistent)
        if isinstance(properties, EncodedProperties):
            return "bytes", properties.data
        return "bytes", b"".join(properties.encode())
    except Exception as exc:
        return "error", type(exc).__name__


@FUZZ
@given(_envelopes, st.booleans())
def test_any_envelope_is_encoded_as_pika_encodes_to_amqps_properties(envelope, persistent):
    assert _one_pass(envelope, persistent) == _by_pika(envelope, persistent)


def test_a_signed_message_is_encoded_in_one_pass_and_decodes_to_the_same_envelope():
    signer = Signer(secrets.token_bytes(32))
    envelope = envelope_for([Symbol("add"), 1, "x" * 90], sender="client-1",
                            reply_to="reply.client-1", signer=signer, target="cell.a-01",
                            correlation_id="c-1")
    encoded = encode_properties(envelope, persistent=True)
    assert isinstance(encoded, EncodedProperties)
    assert encoded.data == b"".join(to_amqp(envelope, persistent=True).encode())
    assert encoded.message_id == envelope.message_id
    back = from_amqp(encoded.decoded(), envelope.body)
    assert back == envelope
    signer.verify(back, "cell.a-01")


def test_a_long_message_id_travels_as_a_header_and_no_property_names_it():
    envelope = Envelope(b"(ping)", message_id="i" * 300)
    encoded = encode_properties(envelope, persistent=False)
    assert isinstance(encoded, EncodedProperties) and encoded.message_id is None
    assert from_amqp(encoded.decoded(), b"(ping)").message_id == "i" * 300


@pytest.mark.parametrize("headers", [{"x-cf-ts": "1"}, {1: "a"}, {"k": object()}])
def test_a_header_to_amqp_refuses_is_refused_the_same_way(headers):
    envelope = Envelope(b"(ping)", headers=headers)
    with pytest.raises(TransportError) as expected:
        to_amqp(envelope, persistent=False)
    with pytest.raises(TransportError) as raised:
        encode_properties(envelope, persistent=False)
    assert str(raised.value) == str(expected.value)


def test_a_time_out_of_range_gets_to_amqps_properties_with_no_timestamp():
    for ts in (math.nan, math.inf, -1.0, 2.0**64):
        properties = encode_properties(Envelope(b"(ping)", timestamp=ts), persistent=False)
        assert isinstance(properties, pika.BasicProperties) and properties.timestamp is None


def test_a_publisher_of_another_shape_publishes_encoded_properties_as_pikas():
    envelope = Envelope(b"(ping)", sender="a", headers={"k": "v", "f": 1.5})
    published = []

    class Channel:
        def basic_publish(self, *args: Any, **kwargs: Any) -> None:
            published.append((args, kwargs))

    _basic_publish(Channel(), "ex", "key", envelope.body,
                   encode_properties(envelope, persistent=False))
    (args, kwargs), = published
    assert args[:3] == ("ex", "key", b"(ping)") and kwargs == {"mandatory": True}
    assert vars(args[3]) == vars(pika.BasicProperties().decode(
        b"".join(to_amqp(envelope, persistent=False).encode())))
