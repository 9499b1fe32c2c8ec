"""docs/protocol-vectors.json and docs/protocol.md against the implementation: a change to the
wire format that is not made in the spec and its vectors fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cellframe import Envelope
from cellframe.transports._amqp_wire import from_amqp, to_amqp
from cellframe.wire.envelope import CONTENT_TYPE
from cellframe.wire.keys import Key, Keyring
from cellframe.wire.signing import EXPIRES_HEADER, SIGNATURE_HEADER, Signer, canonical_bytes

DOCS = Path(__file__).resolve().parents[1] / "docs"
VECTORS = json.loads((DOCS / "protocol-vectors.json").read_text())
KEY = Key(VECTORS["key"]["id"], bytes.fromhex(VECTORS["key"]["secret_hex"]))
CASES = VECTORS["cases"]


def _envelope(case: dict[str, Any]) -> Envelope:
    return Envelope(case["body"].encode(), message_id=case["message_id"],
                    timestamp=case["timestamp"], reply_to=case["reply_to"],
                    sender=case["sender"], correlation_id=case["correlation_id"])


def test_there_are_vectors_for_every_case_the_spec_promises() -> None:
    assert len(CASES) >= 10
    assert any(c["reply_to"] is None for c in CASES) and any(c["reply_to"] == "" for c in CASES)
    assert any(c["sender"] is None for c in CASES) and any(c["sender"] == "" for c in CASES)
    assert any(not c["body"].isascii() for c in CASES)
    assert any("x-cf-id" in c["amqp"]["headers"] for c in CASES)
    assert any(c["correlation_id"] is not None for c in CASES)  # a reply


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_python_implementation_signs_each_vector_as_documented(case: dict[str, Any]) -> None:
    envelope = _envelope(case)
    canonical = canonical_bytes(envelope, exchange=case["exchange"], target=case["routing_key"],
                                key_id=KEY.id, expires=case["expires"])
    assert canonical.hex() == case["canonical_hex"]
    ttl = case["expires"] - case["timestamp"]
    signed = Signer(KEY, exchange=case["exchange"], ttl=ttl).sign(envelope, case["routing_key"])
    assert signed.headers[SIGNATURE_HEADER] == case["signature"]
    assert signed.headers[EXPIRES_HEADER] == case["expires"]
    # What goes on the wire is what the vector shows, and it reads back to the same message.
    properties = to_amqp(signed, persistent=case["routing_key"].startswith("role."))
    shown = case["amqp"]["properties"]
    assert {name: getattr(properties, name) for name in shown} == shown
    assert properties.content_type == CONTENT_TYPE
    assert dict(properties.headers) == case["amqp"]["headers"]
    back = from_amqp(properties, envelope.body)
    verifier = Signer(None, keyring=Keyring([KEY]), exchange=case["exchange"])
    assert verifier.verify(back, case["routing_key"], now=case["timestamp"] + 1) == KEY


def test_a_vector_altered_in_any_field_no_longer_verifies() -> None:
    case = CASES[0]
    signed = Signer(KEY, exchange=case["exchange"], ttl=300).sign(_envelope(case),
                                                                   case["routing_key"])
    verifier = Signer(None, keyring=Keyring([KEY]), exchange=case["exchange"])
    for change in ({"correlation_id": "m-0"}, {"reply_to": "reply.other"}, {"sender": "x"},
                   {"body": b"(say \"hullo\")"}, {"message_id": "m-2"}):
        altered = Envelope(**{**_fields(signed), **change})
        with pytest.raises(Exception, match="forged|altered|signature"):
            verifier.verify(altered, case["routing_key"], now=case["timestamp"] + 1)


def _fields(envelope: Envelope) -> dict[str, Any]:
    return {name: getattr(envelope, name) for name in envelope.__slots__}


def test_the_spec_names_every_header_and_property_the_implementation_sends() -> None:
    spec = (DOCS / "protocol.md").read_text()
    for case in CASES:
        for header in case["amqp"]["headers"]:
            assert f"`{header}`" in spec, f"docs/protocol.md does not name header {header}"
        for name, value in case["amqp"]["properties"].items():
            if value is not None:
                assert f"`{name}`" in spec, f"docs/protocol.md does not name property {name}"
    assert f"`{CONTENT_TYPE}`" in spec
    assert re.search(r"cellframe-sig-v2", spec)
