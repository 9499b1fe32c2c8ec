"""The quick reader of AMQP properties reads them exactly as pika does, or leaves them to pika;
and ``to_amqp``'s memory of good header names changes none of its answers."""

from __future__ import annotations

import secrets
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellframe.errors import TransportError
from cellframe.language.symbols import Symbol
from cellframe.transports import _amqp_wire
from cellframe.transports._amqp_plain import decode_plain
from cellframe.transports._amqp_wire import _problem, decode_properties, to_amqp
from cellframe.wire.envelope import Envelope, envelope_for
from cellframe.wire.signing import Signer

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def _typed(value: Any) -> Any:
    """``value`` with every atom's type spelt out: ``True`` and ``1``, ``"a"`` and ``b"a"``
    differ."""
    if isinstance(value, dict):
        return {_typed(key): _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return type(value).__name__, repr(value)


def _by_pika(data: bytes) -> Any:
    properties = pika.BasicProperties()
    try:
        properties.decode(data)
    except Exception as exc:  # whatever pika raises on bytes it cannot read
        return "error", type(exc).__name__
    return _typed(vars(properties))


def _encoded(envelope: Envelope) -> bytes:
    return b"".join(to_amqp(envelope, persistent=False).encode())


_text = st.text(max_size=20)
_header_values = st.one_of(st.none(), st.booleans(), _text, st.binary(max_size=8),
                           st.integers(-(2**63), 2**63 - 1),
                           st.floats(allow_nan=False, allow_infinity=False))
_envelopes = st.builds(
    Envelope, body=st.just(b"(ping)"), message_id=_text.filter(bool),
    reply_to=st.none() | _text, sender=st.none() | _text, correlation_id=st.none() | _text,
    content_type=st.none() | _text,
    headers=st.dictionaries(st.text(min_size=1, max_size=12).filter(
        lambda key: not key.startswith("x-cf-")), _header_values, max_size=5))


def test_a_signed_message_of_cellframe_takes_the_quick_path():
    signer = Signer(secrets.token_bytes(32))
    envelope = envelope_for([Symbol("add"), 1, "x" * 90], sender="client-1",
                            reply_to="reply.client-1", signer=signer, target="cell.a-01",
                            correlation_id="c-1")
    data = _encoded(envelope)
    quick = decode_plain(data)
    assert quick is not None and _typed(vars(quick)) == _by_pika(data)
    assert decode_properties(data) is not None and _problem(quick) is None


@FUZZ
@given(_envelopes)
def test_properties_a_cellframe_sender_writes_read_as_pika_reads_them(envelope):
    data = _encoded(envelope)
    quick = decode_plain(data)
    if quick is not None:
        assert _typed(vars(quick)) == _by_pika(data)
        assert _problem(quick) is None


@FUZZ
@given(_envelopes, st.integers(min_value=0), st.integers(0, 255), st.booleans())
def test_altered_or_cut_properties_read_as_pika_reads_them_or_go_to_pika(envelope, where,
                                                                         byte, cut):
    data = bytearray(_encoded(envelope))
    where %= len(data)
    if cut:
        del data[where:]
    else:
        data[where] = byte
    quick = decode_plain(bytes(data))
    if quick is not None:
        assert _typed(vars(quick)) == _by_pika(bytes(data))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_read_as_pika_reads_them_or_go_to_pika(data):
    quick = decode_plain(data)
    if quick is not None:
        assert _typed(vars(quick)) == _by_pika(data)


# -- to_amqp's memory of header names ---------------------------------------------------------


@pytest.mark.parametrize("name", ["x-cf-ts", "x" * 256, "\ud800" * 100, 1, b"bytes"])
def test_a_header_name_amqp_cannot_carry_is_refused_every_time(name):
    for _ in range(2):
        with pytest.raises(TransportError):
            to_amqp(Envelope(b"", headers={name: "v"}), persistent=False)


def test_the_header_names_to_amqp_remembers_stay_bounded():
    for i in range(3 * _amqp_wire._GOOD_NAMES_KEPT):
        to_amqp(Envelope(b"", headers={f"h-{i}": "v", "x-cellframe-key": "k"}), persistent=False)
    assert len(_amqp_wire._GOOD_NAMES) <= _amqp_wire._GOOD_NAMES_KEPT
