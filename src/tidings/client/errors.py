"""Typed errors of the client SDK, its local store and its transport.

The device-list refusals of a send are `tidings.errors.MismatchedDevicesError` and
`StaleDevicesError` (one class each, shared with the server). They extend
`tidings.errors.TidingsError`, so the CLI prints every one of them as a one-line
``error: <message>`` (or ``{"error": {"code", "message"}}`` with ``--json``) and never a
traceback. Messages name the problem and, where useful, the next step; they never contain a
passphrase, a key, a device secret or message content.
"""

from __future__ import annotations

from tidings.errors import TidingsError


class StoreError(TidingsError):
    """The local store cannot be used."""

    code = "store_error"


class WrongPassphraseError(StoreError):
    """The passphrase does not unlock this profile."""

    code = "wrong_passphrase"


class StoreTamperedError(StoreError):
    """A row of the local store fails authentication (altered, swapped or corrupted on disk)."""

    code = "store_tampered"


class ProfileNotFoundError(StoreError):
    """There is no Tidings profile in this directory (run `tidings register` or `link`)."""

    code = "profile_not_found"


class ProfileExistsError(StoreError):
    """This directory already holds a Tidings profile."""

    code = "profile_exists"


class NotRegisteredError(StoreError):
    """The profile has no registered account yet."""

    code = "not_registered"


class TransportError(TidingsError):
    """The server could not be reached or answered something that is not the API."""

    code = "network_error"


class ServerError(TidingsError):
    """The server refused a request with a typed error (``code`` is the server's code)."""

    code = "server_error"

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class SendFailedError(TidingsError):
    """The message could not be delivered after retrying (device lists kept changing)."""

    code = "send_failed"


class UnknownGroupError(TidingsError):
    """No group of this device matches the name or id given (see `tidings group list`)."""

    code = "unknown_group"


class NotAGroupMemberError(TidingsError):
    """This account is not (or no longer) a member of the group, or the user named is not."""

    code = "not_a_member"


class NotReportableError(TidingsError):
    """The message cannot be reported: it was not received by this device, or its franking
    material was not kept."""

    code = "not_reportable"


class InvalidArgumentError(TidingsError):
    """A value given by the caller is not acceptable (unknown category, bad count...)."""

    code = "invalid_argument"


class SafetyNumberMismatchError(TidingsError):
    """The safety number given does not match any device of the contact: do not verify."""

    code = "safety_number_mismatch"
