"""Server configuration: defaults, then a TOML file, then `TIDINGS_*` environment variables.

The file's settings are top-level or in a ``[server]`` table; the attachment store's are in a
``[storage]`` table beside them (`STORAGE_SETTINGS`, the same names as everywhere else, e.g.
``s3_bucket``; environment ``TIDINGS_S3_BUCKET``)."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tidings.crypto.psi import DEFAULT_PSI_PARAMETERS
from tidings.errors import TidingsError
from tidings.wire.base64url import b64d


class ConfigError(TidingsError):
    """The server configuration is invalid."""

    code = "invalid_config"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a server node needs to start. Embedded (SQLite) mode is the default."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    log_level: str = "info"
    database_url: str = ""
    """Empty: embedded SQLite in ``data_dir``. Else e.g. postgresql://host/db (cluster mode)."""
    database_schema: str = ""
    """PostgreSQL only: keep the tables in this schema (created if missing) instead of public."""
    redis_url: str = ""
    """Empty: single node. Else redis://host:6379/0 for cross-node delivery and rate limits."""
    redis_prefix: str = "tidings"
    """Namespace of this cluster's Redis channel and keys: clusters (or test runs) sharing one
    Redis must differ here, or they wake each other's devices and share rate limits."""
    node_name: str = "node-1"
    queue_limit: int = 10_000
    """Envelopes kept per device before sends to it get 507 queue_full."""
    message_ttl_s: int = 30 * 24 * 3600
    relay_durability: str = "full"
    """``full``: every acknowledged send survives a process crash and a power loss (SQLite WAL
    fsynced at every batch commit; PostgreSQL ``synchronous_commit = on``). ``relaxed``: it
    survives a process crash; a power loss may lose the last batches (docs/api.md, Operations)."""
    relay_cache_ttl_s: float = 10.0
    """How long a node trusts its cached credentials, enforcement and device lists without an
    invalidation (they are invalidated at once on every change; this bounds a lost one, say
    with Redis unreachable). 0 turns the caches off."""
    sweep_interval_s: float = 5.0
    """How often the node looks for queued envelopes whose wake-up hint was lost (Redis down,
    another node) and wakes their connections here: such an envelope is delivered within about
    this long (`tidings.server.sweep`). One query per interval, whatever the connections."""
    attachment_max_bytes: int = 100 * 1024 * 1024 + 4 * 1024 * 1024
    """Ciphertext limit: 100 MiB of plaintext plus the chunk tags and header."""
    attachment_ttl_s: int = 30 * 24 * 3600
    rate_registrations_per_hour: int = 20
    """Per client address."""
    rate_prekey_fetches_per_minute: int = 120
    """Per account."""
    rate_sends_per_minute: int = 600
    """Per account."""
    franking_key_file: Path | None = None
    """Default ``<data_dir>/franking.key``, created on first start (mode 0600)."""
    rate_reports_per_hour: int = 30
    """Per account: ``POST /v1/reports`` (a burst of this many, then this many an hour)."""
    rate_attachment_uploads_per_minute: int = 30
    """Per account."""
    attachment_quota_bytes: int = 2 * 1024 * 1024 * 1024
    """Per account: bytes of live (unexpired) attachments it may hold; beyond, uploads get
    507 ``attachment_quota_exceeded`` until some expire."""
    header_timeout_s: float = 10.0
    """A connection's request headers must be complete this many seconds after it opens
    (or after the request's first byte on a kept-alive connection), else 408 and close."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For``
    and ``X-Forwarded-Proto`` are believed. Empty: the headers are ignored, the TCP peer is
    the client. TOML: a list; environment: comma-separated."""
    detection_enabled: bool = True
    """Accept detection vouchers (``POST /v1/detection/vouchers``) and process them; the list
    endpoints answer whether or not. Off: vouchers answer 404 ``not_found``."""
    detection_threshold: int = 10
    """Matching vouchers one device window needs before the server can open any of them
    (docs/detection.md "Threshold and synthetic vouchers"); at least 2. The published list
    carries it: a node refuses to start when the current list was built for another value
    (rebuild it with ``tidings admin detection build-list``)."""
    detection_synthetic_ppm: int = DEFAULT_PSI_PARAMETERS.synthetic_rate_ppm
    """Parts per million of vouchers a device makes synthetic (docs/detection.md "Threshold
    and synthetic vouchers"; default 977, about 1/1024, so about 4 per window of 4,096).
    Published inside the list, so it takes effect with the next ``tidings admin detection
    build-list``. 0 turns synthetic vouchers off, which lets the server count a window's real
    matches below t: for tests and measurements only."""
    detection_key_file: Path | None = None
    """The PSI secret that opens vouchers. Default: beside ``franking_key_file`` when that is
    set (the keys every node of a cluster shares), else ``<data_dir>/detection.key``."""
    detection_signing_key_file: Path | None = None
    """The Ed25519 key signing published lists. Default: beside ``franking_key_file`` when
    that is set, else ``<data_dir>/detection_list_signing.key``."""
    rate_vouchers_per_hour: int = 2000
    """Per account: ``POST /v1/detection/vouchers`` (one voucher per image sent)."""
    rate_lawful_portal_per_hour: int = 30
    """Per client address: every form the requester portal (``/lawful-portal``) takes."""
    s3_bucket: str = ""
    """Empty (the embedded default): attachments on local disk in ``<data_dir>/attachments``.
    Else the S3 bucket (created by the operator) every node keeps attachments in."""
    s3_endpoint: str = ""
    """The S3-compatible server's URL (``http://127.0.0.1:8333``); empty: AWS S3."""
    s3_region: str = ""
    """Empty: boto3's default (``AWS_DEFAULT_REGION``, else none)."""
    s3_access_key_id: str = ""
    """Empty (with ``s3_secret_access_key``): boto3's credential chain (``AWS_*`` variables,
    instance credentials)."""
    s3_secret_access_key: str = field(default="", repr=False)
    """Never logged, in an error or in this object's ``repr``."""
    kt_epoch_seconds: float = 60.0
    """How often the key directory publishes an epoch (a signed head, with the device lists
    queued since the last one): a device list submitted now is visible to lookups within
    about this long (docs/key-transparency.md "Publication"). One node of a cluster publishes
    each epoch."""
    kt_witnesses: tuple[str, ...] = ()
    """The Ed25519 public keys (base64url, 32 bytes) of the witnesses whose co-signatures of
    epoch heads ``POST /v1/kt/cosign/{epoch}`` accepts (at most 32). TOML: a list;
    environment: comma-separated."""
    lawful: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)
    """The file's ``[lawful]`` table, as `tidings.safety.mailer.load_lawful_settings` reads it
    (requesters' official domains, the sender, the portal's URL, the SMTP relay; the
    ``TIDINGS_LAWFUL_*`` and ``TIDINGS_SMTP_URL`` variables override it there). File only;
    never in a ``repr``: the SMTP URL may hold a password."""
    referrals: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)
    """The file's ``[referrals]`` table, as `tidings.safety.referrals.load_referrals` reads it
    (the CyberTipline URL and credentials, ``[referrals.reporter]``; the ``TIDINGS_CYBERTIP_*``
    variables override it there). File only; never in a ``repr``: it may hold a password."""

    @classmethod
    def load(cls, path: Path | None = None, env: dict[str, str] | None = None) -> ServerConfig:
        """Build the configuration from an optional TOML file and environment overrides.

        Raises:
            ConfigError: the file is unreadable or not TOML, or a value has the wrong type.
        """
        config = cls()
        if path is not None:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from None
            section = dict(data.get("server", data))
            storage = section.pop("storage", data.get("storage", {}))
            if not isinstance(storage, dict) or not set(storage) <= STORAGE_SETTINGS:
                names = ", ".join(sorted(STORAGE_SETTINGS))
                raise ConfigError(f"the [storage] table in {path} takes only: {names}")
            tables: dict[str, dict[str, object]] = {}
            for name in sorted(TABLE_SETTINGS):
                table = section.pop(name, data.get(name, {}))
                if not isinstance(table, dict):
                    raise ConfigError(f"[{name}] in {path} must be a table")
                tables[name] = dict(table)
            config = config._merged({**section, **storage}, source=str(path))
            config = replace(config, **tables)  # type: ignore[arg-type]
        environ = os.environ if env is None else env
        overrides = {
            f.name: environ[f"TIDINGS_{f.name.upper()}"]
            for f in fields(cls)
            if f"TIDINGS_{f.name.upper()}" in environ and f.name not in TABLE_SETTINGS
        }
        return config._merged(overrides, source="environment")

    def with_overrides(self, **values: object) -> ServerConfig:
        """This configuration with command-line ``values`` applied (``None`` means unset)."""
        return self._merged({k: v for k, v in values.items() if v is not None}, source="options")

    def _merged(self, values: Mapping[str, object], *, source: str) -> ServerConfig:
        known = {f.name: f for f in fields(self)}
        changes: dict[str, object] = {}
        for key, value in values.items():
            if key not in known or key in TABLE_SETTINGS:
                raise ConfigError(f"unknown setting {key!r} in {source}")
            current = getattr(self, key)
            try:
                if key in OPTIONAL_PATHS:
                    changes[key] = Path(str(value)) if value else None
                elif key == "trusted_proxies":
                    changes[key] = _networks(value)
                elif key == "kt_witnesses":
                    changes[key] = _witness_keys(value)
                elif isinstance(current, bool):
                    changes[key] = str(value).lower() in {"1", "true", "yes", "on"}
                elif isinstance(current, int):
                    changes[key] = int(str(value))
                elif isinstance(current, float):
                    changes[key] = float(str(value))
                elif isinstance(current, Path):
                    changes[key] = Path(str(value))
                else:
                    changes[key] = str(value)
            except ValueError as exc:
                if key in {"trusted_proxies", "kt_witnesses"}:
                    raise ConfigError(f"setting {key!r} in {source}: {exc}") from None
                raise ConfigError(f"setting {key!r} in {source} must be a number") from None
        merged = replace(self, **changes)  # type: ignore[arg-type]
        if merged.detection_threshold < MIN_DETECTION_THRESHOLD:
            raise ConfigError(
                f"setting 'detection_threshold' in {source} must be at least "
                f"{MIN_DETECTION_THRESHOLD}"
            )
        if not merged.kt_epoch_seconds > 0:
            raise ConfigError(f"setting 'kt_epoch_seconds' in {source} must be positive")
        if not 0 <= merged.detection_synthetic_ppm <= MAX_SYNTHETIC_PPM:
            raise ConfigError(
                f"setting 'detection_synthetic_ppm' in {source} must be 0..{MAX_SYNTHETIC_PPM}"
            )
        return merged


OPTIONAL_PATHS = frozenset(
    {"franking_key_file", "detection_key_file", "detection_signing_key_file"}
)
"""Settings holding a path or nothing (an empty value unsets them)."""

MIN_DETECTION_THRESHOLD = 2
"""One matching voucher alone must never open anything."""

MAX_SYNTHETIC_PPM = 1_000_000
"""Parts per million: every voucher synthetic (detection blind) at most."""

TABLE_SETTINGS = frozenset({"lawful", "referrals"})
"""Settings that are a whole TOML table, read from the file only (`ServerConfig.load`)."""

STORAGE_SETTINGS = frozenset(
    {"s3_bucket", "s3_endpoint", "s3_region", "s3_access_key_id", "s3_secret_access_key"}
)
"""The settings of the attachment store: the file's ``[storage]`` table."""


def _items(value: object) -> list[str]:
    """The items of a TOML list or a comma-separated string, stripped, empty ones left out."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [text for text in (str(item).strip() for item in items) if text]


def _networks(value: object) -> tuple[str, ...]:
    """Proxy addresses from a TOML list or a comma-separated string, each an IP address or
    network; raises ValueError for anything else (a host name would be resolved by nobody,
    and ``*`` would trust every client to name its own address)."""
    out = []
    for text in _items(value):
        try:
            # Normalised, as uvicorn's ProxyHeadersMiddleware parses it (strict networks).
            if "/" in text:
                out.append(str(ipaddress.ip_network(text, strict=False)))
            else:
                out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
    return tuple(out)


MAX_KT_WITNESSES = 32
"""Co-signatures one epoch head carries at most (`tidings.crypto.kt_proofs.MAX_WITNESSES`)."""


def _witness_keys(value: object) -> tuple[str, ...]:
    """Witness public keys from a TOML list or a comma-separated string, each base64url of 32
    bytes; raises ValueError for anything else or more than `MAX_KT_WITNESSES`."""
    out: list[str] = []
    for text in _items(value):
        try:
            key = b64d(text, what="a witness key", max_len=32)
        except TidingsError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"{text!r} is not a base64url Ed25519 public key")
        out.append(text)
    if len(set(out)) > MAX_KT_WITNESSES:
        raise ValueError(f"at most {MAX_KT_WITNESSES} witnesses")
    return tuple(dict.fromkeys(out))
