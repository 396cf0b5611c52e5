"""Numeric ids of the messaging API: one strict parser for ids that arrive as text (the device
id in the credentials, path and query parameters), and the strict integer types of the JSON
bodies.

Python's ``int()`` (and pydantic's lax mode, which uses it) accepts ``+1``, `` 1``, ``1_0``,
Arabic-Indic digits and numbers of any size; the database then fails on a value past its
column (an unauthenticated 500). Here an id is canonical ASCII decimal (no sign, space,
separator or leading zero) within the range of its kind, else a typed error — before any
query runs. JSON numbers are JSON-Schema integers, as /openapi.json says ``"type": "integer"``:
``1`` or ``1.0``, never ``1.5``, ``true`` or ``"1"`` (pydantic's lax mode takes the last two).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema

from tidings.errors import DecodeError

DEVICE_ID_MAX = 2**31 - 1
"""Device ids are assigned 1, 2, ... per account and stored as 32-bit integers."""
REGISTRATION_ID_MAX = 2**31 - 1
"""Registration ids are random 31-bit values chosen by the client (docs/api.md)."""
ACCOUNT_ID_MAX = 2**63 - 1
"""Account ids are the database's 64-bit row ids."""
EPOCH_MAX = 2**63 - 1
"""Key-transparency epochs are numbered 1, 2, ... and stored as signed 64-bit integers."""

_CANONICAL = re.compile(r"(?:0|[1-9][0-9]*)")  # ASCII only: re's [0-9] is not \d


def parse_id(text: str, *, what: str, maximum: int, minimum: int = 1) -> int:
    """The integer that ``text`` spells in canonical ASCII decimal, in [minimum, maximum].

    Raises:
        DecodeError: ``text`` is not canonical ASCII decimal digits, or is out of range. The
            message names ``what`` and the range, never the text itself.
    """
    # The length check first: int() of a huge digit string costs time (quadratic).
    if len(text) > len(str(maximum)) or not _CANONICAL.fullmatch(text):
        raise DecodeError(f"{what} must be a decimal number from {minimum} to {maximum}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise DecodeError(f"{what} must be a decimal number from {minimum} to {maximum}")
    return value


def _text_id(what: str, maximum: int, minimum: int = 1) -> object:
    def validate(value: object) -> int:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a decimal number")
        try:
            return parse_id(value, what=what, maximum=maximum, minimum=minimum)
        except DecodeError as exc:
            raise ValueError(exc.message) from None

    return PlainValidator(validate)


def _schema(maximum: int, minimum: int = 1) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer", "minimum": minimum, "maximum": maximum})


DeviceIdText = Annotated[int, _text_id("device id", DEVICE_ID_MAX), _schema(DEVICE_ID_MAX)]
"""A device id in a path or query parameter (answered 400 ``malformed`` when not strict)."""

EpochText = Annotated[int, _text_id("epoch", EPOCH_MAX), _schema(EPOCH_MAX)]
"""A key-transparency epoch in a path parameter."""

def _json_integer(value: object) -> object:
    # A JSON-Schema integer is a number with no fraction; pydantic then refuses 1.5 itself.
    if isinstance(value, bool | str):
        raise ValueError("expected a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer in a JSON body: ``1`` or ``1.0``, not a boolean, a string or a fraction."""

DeviceIdJson = Annotated[int, Field(ge=1, le=DEVICE_ID_MAX), BeforeValidator(_json_integer)]
"""A device id in a JSON body, in range."""

RegistrationIdJson = Annotated[
    int, Field(ge=1, le=REGISTRATION_ID_MAX), BeforeValidator(_json_integer)
]
"""A registration id in a JSON body (a device's own, at registration or linking)."""

ClaimedRegistrationIdJson = Annotated[
    int, Field(ge=0, le=REGISTRATION_ID_MAX), BeforeValidator(_json_integer)
]
"""The registration id a sender believes a device has; 0 (unknown) is answered as stale."""
