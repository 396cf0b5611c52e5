"""One class per error: the SDK raises the shared `tidings.errors` classes, never a copy."""

from __future__ import annotations

import importlib
import inspect

from tidings.errors import TidingsError

MODULES = (
    "tidings.errors",
    "tidings.client.errors",
    "tidings.client.transport",
    "tidings.client.store",
    "tidings.client.sdk",
    "tidings.client.sdk.client",
    "tidings.client.sdk.attachments",
    "tidings.client.sdk.trust",
)


def test_every_error_class_of_the_client_is_defined_once() -> None:
    defined: dict[str, list[str]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, TidingsError) and cls.__module__ == name:
                defined.setdefault(cls_name, []).append(name)
    twice = {cls_name: where for cls_name, where in defined.items() if len(where) > 1}
    assert not twice, twice


def test_device_list_refusals_are_the_shared_classes() -> None:
    import tidings.client.errors as client_errors

    assert not hasattr(client_errors, "MismatchedDevicesError")
    assert not hasattr(client_errors, "StaleDevicesError")
