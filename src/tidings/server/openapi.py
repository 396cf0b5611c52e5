"""The API contract in ``/openapi.json``: every error a route can answer, and parameter schemas
that say what the server really accepts (docs/api.md "Errors").

One home for both:

- `errors` builds a route's ``responses=`` from the `tidings.errors` classes it can raise: the
  status of each comes from the one status table (`tidings.server.errors.status_of`), the body
  schema is `ErrorBody` (what `tidings.server.errors.body_for` writes) with the possible
  ``code`` values as an enum, and the description lists each code with its meaning.
- `install` finishes the generated document: the HTTP Basic device ``securityScheme`` on every
  route that documents 401 (it takes device credentials; schemathesis's ``ignored_auth`` check
  holds the two together), parameter schemas by name (`PARAMETER_SCHEMAS`: usernames,
  device ids, message and attachment ids), the JSON 404/405 answers to unknown paths and
  methods, and no FastAPI 422 (validation errors answer 400 ``malformed`` here).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.routing import Match
from starlette.types import Scope

from tidings import errors as e
from tidings.server.errors import status_of
from tidings.server.ids import DEVICE_ID_MAX
from tidings.server.models import USERNAME_PATTERN

Responses = dict[int | str, dict[str, Any]]
"""What FastAPI takes as a route's ``responses=``."""

USERNAME_REGEX = USERNAME_PATTERN.pattern

SECURITY_SCHEME = "device"

MALFORMED_REQUEST = "malformed"
"""The code of a request that fails validation (body, path or query): status 400, not 422."""


class ErrorDetail(BaseModel):
    """The ``error`` object of every error answer."""

    code: str = Field(description="Stable, machine-readable error code (tidings.errors).")
    message: str = Field(description="One line for people; never content, keys or ids.")
    missing: list[int] = Field(
        default_factory=list,
        description="`mismatched_devices` only: current devices the request did not name.",
    )
    extra: list[int] = Field(
        default_factory=list,
        description="`mismatched_devices` only: named devices the account does not have.",
    )
    stale: list[int] = Field(
        default_factory=list,
        description="`stale_devices` only: devices whose registration id changed.",
    )


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: ``{"error": {"code", "message", ...details}}``."""

    error: ErrorDetail


# --- error groups most routes share ---------------------------------------------------------

DEVICE_AUTH: tuple[type[e.TidingsError], ...] = (
    e.UnauthorizedError,
    e.AccountBannedError,
    e.AccountSuspendedError,
)
"""Raised by the device-credentials dependency: missing, malformed or wrong credentials (401),
an account under a ban or suspension (403)."""

DEVICE_AUTH_ANY: tuple[type[e.TidingsError], ...] = (e.UnauthorizedError,)
"""The same for the routes that stay open to banned and suspended accounts."""

BAD_REQUEST: tuple[type[e.TidingsError], ...] = (e.DecodeError, e.OversizedError)
"""Any request: a body, path or query that fails validation (400 ``malformed``), or a body
over the 2 MiB limit (413 ``oversized``)."""

DEVICE_KEYS: tuple[type[e.TidingsError], ...] = (
    e.TruncatedError,
    e.UnsupportedVersionError,
    e.InvalidKeyError,
    e.InvalidSignatureError,
)
"""Checking a `DeviceKeys` object or a prekey upload (identity key, prekey signatures)."""


def errors(*kinds: type[e.TidingsError]) -> Responses:
    """The ``responses=`` of a route that can raise ``kinds``: one entry per status (from the
    status table), whose body is `ErrorBody` with ``code`` one of the kinds' codes. A
    `RateLimitedError` adds the ``Retry-After`` header to its response."""
    by_status: dict[int, dict[str, str]] = {}
    for kind in kinds:
        docs = by_status.setdefault(status_of(kind), {})
        docs.setdefault(kind.code, _first_line(kind.__doc__ or kind.code))
    responses: Responses = {}
    for status in sorted(by_status):
        codes = by_status[status]
        code_schema = {"properties": {"error": {"properties": {"code": {"enum": [*codes]}}}}}
        response: dict[str, Any] = {
            "model": ErrorBody,
            "description": "\n".join(f"- `{code}`: {text}" for code, text in codes.items()),
            "content": {"application/json": {"schema": code_schema}},
        }
        if any(issubclass(kind, e.RateLimitedError) for kind in kinds if status_of(kind) == status):
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds until the next request of this kind is accepted.",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[status] = response
    return responses


def _first_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "username": {"type": "string", "pattern": USERNAME_REGEX, "minLength": 3, "maxLength": 32},
    "device_id": {"type": "integer", "minimum": 1, "maximum": DEVICE_ID_MAX},
    # 16 bytes in unpadded base64url (routes/messages.py MESSAGE_ID_LEN).
    "message_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
    # 32 random bytes in unpadded base64url (routes/attachments.py).
    "attachment_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
}
"""The schema of every path and query parameter of these names, whatever type the route's
signature declares: what the server accepts on the wire (digits only for ids)."""

HTTP_ERROR_CODES = {400: MALFORMED_REQUEST, 404: "not_found", 405: "method_not_allowed"}
"""Codes of the errors the framework answers itself: a body that is not JSON (400), a path no
route has (404), a method the path does not have (405)."""


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the path of ``scope`` (for a 405's ``Allow``)."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        route_methods = route.methods
        if route_methods and route.matches(scope)[0] != Match.NONE:
            methods |= route_methods
    return sorted(methods)


_UNKNOWN_PATH = "UnknownPath"
_UNKNOWN_METHOD = "MethodNotAllowed"


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` the finished contract (built once, then cached)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=_DESCRIPTION,
            routes=app.routes,
        )
        for item in document.get("paths", {}).values():
            for operation in item.values():
                _finish_operation(operation)
        document["paths"] = _merge_identical_templates(document.get("paths", {}))
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "basic",
                "description": "user `<username>.<device_id>`, password base64url(device "
                'secret) (docs/api.md "Authentication")',
            }
        }
        components["responses"] = {
            _UNKNOWN_PATH: _plain_error("No route has this path: `not_found`.", "not_found"),
            _UNKNOWN_METHOD: _plain_error(
                "The path exists but not with this method: `method_not_allowed`; `Allow` "
                "lists the methods it has.",
                "method_not_allowed",
            ),
        }
        app.openapi_schema = document
        return document

    app.openapi = build  # type: ignore[method-assign]


_DESCRIPTION = (
    "End-to-end encrypted messaging (docs/api.md). Every error is JSON `ErrorBody` with a "
    "stable `code`; each operation lists the statuses and codes it can answer. Any path that "
    "no route has answers 404 `not_found`, and a method a path does not have answers 405 "
    "`method_not_allowed` (components.responses), in the same shape."
)


def _finish_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    for parameter in operation.get("parameters", []):
        schema = PARAMETER_SCHEMAS.get(parameter.get("name", ""))
        if schema is not None and parameter.get("in") in ("path", "query"):
            parameter["schema"] = dict(schema)
    if any(p.get("in") == "path" for p in operation.get("parameters", [])):
        # A path segment that does not fit the route's shape (``/v1/devices/abc``, an id
        # with a slash) reaches no route: 404 ``not_found``, like any unknown path.
        _add_code(responses, 404, "not_found", "No route has this path.")
    if str(status_of(e.UnauthorizedError)) in responses:
        operation["security"] = [{SECURITY_SCHEME: []}]


_TEMPLATE_PARAMETER = re.compile(r"\{([^}]+)\}")


def _add_code(responses: dict[str, Any], status: int, code: str, text: str) -> None:
    response = responses.get(str(status))
    if response is None:
        responses[str(status)] = _plain_error(f"- `{code}`: {text}", code)
        return
    schema = response["content"]["application/json"]["schema"]
    codes: list[str] = schema["properties"]["error"]["properties"]["code"]["enum"]
    if code not in codes:
        codes.append(code)
        response["description"] += f"\n- `{code}`: {text}"


def _merge_identical_templates(paths: dict[str, Any]) -> dict[str, Any]:
    """One path item per URL shape. ``PUT /v1/messages/{username}`` and ``DELETE
    /v1/messages/{message_id}`` serve the same URLs, and OpenAPI forbids two templates that
    differ only in parameter names (tools would take ``DELETE`` for an unknown method of the
    first): such paths become one, ``/v1/messages/{username_or_message_id}``, each operation
    keeping its own parameter schema and description."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(_TEMPLATE_PARAMETER.sub("{}", path), []).append(path)
    merged: dict[str, Any] = {}
    for templates in groups.values():
        if len(templates) == 1:
            merged[templates[0]] = paths[templates[0]]
            continue
        names = [_TEMPLATE_PARAMETER.findall(t) for t in templates]
        joined = ["_or_".join(dict.fromkeys(column)) for column in zip(*names, strict=True)]
        target = templates[0]
        for old, new in zip(names[0], joined, strict=True):
            target = target.replace("{" + old + "}", "{" + new + "}")
        item: dict[str, Any] = {}
        for template, own in zip(templates, names, strict=True):
            rename = dict(zip(own, joined, strict=True))
            for method, operation in paths[template].items():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path":
                        parameter.setdefault("description", f"the {parameter['name']}")
                        parameter["name"] = rename[parameter["name"]]
                item[method] = operation
        merged[target] = item
    return merged


def _plain_error(description: str, code: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "$ref": "#/components/schemas/ErrorBody",
                    "properties": {"error": {"properties": {"code": {"enum": [code]}}}},
                }
            }
        },
    }
