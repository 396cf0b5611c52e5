"""What the safety side's outbound connections (the CyberTipline client, the SMTP mailer)
share about where they may connect: a plain-text scheme (``http``, ``smtp+insecure``) is
accepted for a loopback host only, so a local test server or relay needs no TLS while a
remote one always gets it."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: ``localhost`` or a loopback IP
    literal (127.0.0.0/8, ::1). Any other name is not, whatever it resolves to (no lookup is
    made). Raises nothing."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
