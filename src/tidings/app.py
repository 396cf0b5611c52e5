"""The composition root: builds the one ASGI application from the configuration.

This is the only module (with `cli`) that knows every layer; everything else receives what it
needs by dependency injection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from tidings import __version__
from tidings.clock import now_ms
from tidings.console import build_console
from tidings.console.portal import PORTAL_CSRF_KEY_LABEL, build_portal
from tidings.crypto.psi import DEFAULT_PSI_PARAMETERS
from tidings.errors import TidingsError
from tidings.safety import http as safety_http
from tidings.safety.detection import (
    PROCESS_BATCH,
    DetectionKeys,
    DetectionService,
    StoreListBlobs,
    banks_device_list,
)
from tidings.safety.detection_http import build_detection_router
from tidings.safety.inventory import RetentionSettings
from tidings.safety.keyfile import (
    load_anchor_key,
    load_evidence_keys,
    load_lawful_signing_key,
    load_staff_key,
)
from tidings.safety.mailer import load_lawful_settings
from tidings.safety.referrals import load_referrals
from tidings.safety.reports import FrankingKey, FrankingKeyRing
from tidings.safety.service import SafetyService
from tidings.safety.sql import SqlStaffRepository
from tidings.server import openapi
from tidings.server.api import build_router
from tidings.server.auth import (
    AuthenticatedDevice,
    authenticated_device,
    authenticated_device_any,
)
from tidings.server.bodylimit import ChunkedBodyLimit
from tidings.server.config import ConfigError, ServerConfig
from tidings.server.errors import typed_error_response
from tidings.server.fast_send import FastSend
from tidings.server.hub import LocalHub, RedisHub
from tidings.server.kt_directory import KeyDirectory, load_kt_keys
from tidings.server.kt_publisher import EpochPublisher
from tidings.server.metrics import Metrics
from tidings.server.middleware import LimitsAndMetrics
from tidings.server.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tidings.server.relay import NodeCache
from tidings.server.routes import accounts, attachments, keys, kt, messages, websocket
from tidings.server.state import ServerState, load_franking_key
from tidings.server.sweep import QueueSweep
from tidings.storage.blobs import AttachmentStore, LocalAttachmentStore
from tidings.storage.database import Database, sqlite_url
from tidings.storage.files import (
    AUDIT_ANCHOR_FILE,
    DETECTION_KEY_FILE,
    DETECTION_SIGNING_KEY_FILE,
    EVIDENCE_KEYS_FILE,
    LAWFUL_SIGNING_KEY_FILE,
    STAFF_KEY_FILE,
    ensure_private_dir,
    tighten_tree,
)
from tidings.storage.messaging import MessagingStore
from tidings.storage.s3 import S3AttachmentStore
from tidings.wire.base64url import b64d

log = logging.getLogger("tidings.app")

MAX_JSON_BODY = 2 * 1024 * 1024
"""Largest request body outside attachment uploads (a send to 1000 devices fits)."""

UPLOAD_PATH = "/v1/attachments"
"""The streamed upload, which enforces its own size limit instead of `MAX_JSON_BODY`."""

PURGE_INTERVAL_S = 60.0
DETECTION_INTERVAL_S = 5.0
"""How often a node looks for detection vouchers to process when none woke it (a voucher
accepted by another node, or left by a crash)."""


def build_state(config: ServerConfig) -> ServerState:
    """Everything the routes use, unstarted (no connections yet).

    Raises:
        ConfigError: cluster mode (``redis_url``) without a shared ``franking_key_file``:
            every node must tag with the same key, or reports verified by another node fail;
            or a ``database_schema`` that is not a plain identifier, or set for SQLite.
    """
    if config.redis_url and config.franking_key_file is None:
        raise ConfigError(
            "cluster mode (redis_url) needs franking_key_file: every node must share one key"
        )
    attachments_dir = prepare_data_dir(config.data_dir)
    metrics = Metrics()
    try:
        db = Database(
            config.database_url or sqlite_url(config.data_dir), schema=config.database_schema
        )
    except ValueError as exc:
        raise ConfigError(f"database_schema: {exc}") from None
    prefix = config.redis_prefix
    hub: LocalHub = RedisHub(config.redis_url, prefix=prefix) if config.redis_url else LocalHub()
    limiter: RateLimiter = (
        RedisRateLimiter(config.redis_url, prefix=prefix)
        if config.redis_url
        else MemoryRateLimiter()
    )
    try:
        store = MessagingStore(db, durability=config.relay_durability)
    except ValueError as exc:
        raise ConfigError(f"relay_durability: {exc}") from None
    # The node's writer hands every commit to the hub: connections here get the envelopes
    # straight from it, and (`RedisHub`) so do the other nodes' connections, instead of
    # reading their queue. Only SQLite commits queue positions in order (`Mailbox`).
    store.queue.on_committed = hub.deliver_committed
    hub.pushes_complete = True
    hub.ordered = db.is_sqlite
    cache = NodeCache(ttl_s=config.relay_cache_ttl_s)
    hub.on_invalidate(cache.invalidate)
    return ServerState(
        config=config,
        db=db,
        store=store,
        hub=hub,
        limiter=limiter,
        metrics=metrics,
        franking_key=load_franking_key(config),
        attachments=build_attachment_store(config, attachments_dir),
        cache=cache,
    )


def build_key_directory(config: ServerConfig, state: ServerState) -> KeyDirectory:
    """The key directory on the server's database, with the KT keys (`load_kt_keys`) beside
    ``franking_key_file`` when that is set (the keys every node of a cluster shares), else in
    the data directory, and the configured witnesses (``kt_witnesses``).

    Raises:
        InvalidKeyError: a KT key file holds something else than a key.  OSError.
    """
    key_dir = config.data_dir
    if config.franking_key_file is not None:
        key_dir = config.franking_key_file.parent
    witnesses = {b64d(key, what="witness key", max_len=32) for key in config.kt_witnesses}
    return KeyDirectory(state.db, load_kt_keys(key_dir), witnesses=witnesses, clock=state.clock)


def build_attachment_store(config: ServerConfig, attachments_dir: Path) -> AttachmentStore:
    """The S3 bucket when ``s3_bucket`` is set (every node of a cluster on one bucket), else
    the local directory ``attachments_dir`` (the embedded default)."""
    if not config.s3_bucket:
        return LocalAttachmentStore(attachments_dir)
    return S3AttachmentStore(
        bucket=config.s3_bucket,
        endpoint_url=config.s3_endpoint,
        region=config.s3_region,
        access_key_id=config.s3_access_key_id,
        secret_access_key=config.s3_secret_access_key,
    )


async def purge_expired(state: ServerState) -> int:
    """One purge round: expired envelopes and attachments (records, then their bytes in the
    attachment store). Returns how many envelopes went. Reads already hide expired items; this
    reclaims the space.

    Raises:
        StorageUnavailableError: the attachment store failed (the records are gone; the
            bytes left are the store's expiry rule's, docs/operations.md).
    """
    envelopes, expired = await state.store.purge_expired(state.clock())
    state.metrics.purged.labels(kind="envelopes").inc(envelopes)
    await state.attachments.delete_many(expired)
    state.metrics.purged.labels(kind="attachments").inc(len(expired))
    return envelopes


async def remove_orphan_uploads(state: ServerState) -> None:
    """What uploads cut off by a crash (of this node or another on the same store) left:
    ``.part`` files, or S3 multipart uploads, older than an hour."""
    removed = await state.attachments.remove_orphans()
    state.metrics.purged.labels(kind="orphan_uploads").inc(removed)


async def purge_round(state: ServerState, safety: SafetyService) -> None:
    """One round of the periodic clean-up, every `PURGE_INTERVAL_S` on every node: expired
    envelopes and attachments (`purge_expired`), expired evidence (one batch, one audit entry
    by "system" if anything went: `SafetyService.purge_expired_evidence`), and orphan
    uploads (`remove_orphan_uploads`). Each task runs on its own: one failing (logged by error
    class, counted in ``tidings_purge_runs_total``) does not stop the others, and the next
    round retries.
    Never raises (except cancellation)."""

    async def evidence() -> None:
        # The safety service is synchronous (its own engine): off the event loop.
        purged = await asyncio.to_thread(safety.purge_expired_evidence)
        state.metrics.purged.labels(kind="evidence").inc(purged)

    async def messaging() -> None:
        await purge_expired(state)

    async def holds() -> None:
        # What ended holds kept past an account's deletion: nothing else deletes those bytes.
        for hold, ids in await asyncio.to_thread(safety.holds.ended_to_clear):
            await state.attachments.delete_many(ids)
            state.metrics.purged.labels(kind="held_attachments").inc(len(ids))
            await asyncio.to_thread(safety.holds.mark_cleared, hold.hold_id)

    async def detection_windows() -> None:
        if safety.detection is not None:
            purged = await asyncio.to_thread(safety.detection.purge_idle_windows)
            state.metrics.purged.labels(kind="detection_records").inc(purged)

    tasks: dict[str, Callable[[], Awaitable[None]]] = {
        "messaging": messaging,
        "evidence": evidence,
        "holds": holds,
        "detection_windows": detection_windows,
        "orphan_uploads": lambda: remove_orphan_uploads(state),
    }
    for task, run in tasks.items():
        await _purge_task(state, task, run)


async def _purge_task(state: ServerState, task: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run one clean-up task, counted in ``tidings_purge_runs_total``; a failure is logged by
    its class and does not raise (the next round retries; expiry is not urgent)."""
    try:
        await run()
    except Exception as exc:
        state.metrics.purge_runs.labels(task=task, outcome="failed").inc()
        log.warning("purge failed: %s", task, extra={"error": type(exc).__name__})
    else:
        state.metrics.purge_runs.labels(task=task, outcome="ok").inc()


async def _purge_forever(state: ServerState, safety: SafetyService) -> None:
    while True:
        await asyncio.sleep(PURGE_INTERVAL_S)
        await purge_round(state, safety)


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the data directory and its ``attachments/`` with mode 0700 (whatever the
    umask), or take group and other access away from an existing one and everything in it,
    logging a warning per path narrowed (attachment files, whose names are download
    capabilities, are counted, not named). Returns the attachments directory.

    Raises:
        OSError: the directories cannot be created or read.
    """
    attachments_dir = data_dir / "attachments"
    ensure_private_dir(attachments_dir)
    roots = [data_dir]
    if attachments_dir.is_symlink():  # a shared volume linked in: not walked through the link
        roots.append(attachments_dir)
    tightened = untouchable = 0  # attachment files: counted, not named
    for root in roots:
        changed, failed = tighten_tree(root)
        for path in changed:
            if path.parent == attachments_dir:
                tightened += 1
            else:
                log.warning("readable by other users, tightened to owner-only: %s", path)
        for path in failed:
            if path.parent == attachments_dir:
                untouchable += 1
            else:
                log.warning("readable by other users and not ours to tighten: %s", path)
    if tightened:
        log.warning(
            "files readable by other users, tightened to owner-only in: %s",
            attachments_dir,
            extra={"count": tightened},
        )
    if untouchable:
        log.warning(
            "files readable by other users and not ours to tighten in: %s",
            attachments_dir,
            extra={"count": untouchable},
        )
    return attachments_dir


def build_safety(
    config: ServerConfig,
    *,
    franking_key: bytes,
    attachments: AttachmentStore,
    clock: Callable[[], int] = now_ms,
    on_enforcement: Callable[[str], None] | None = None,
) -> SafetyService:
    """The trust & safety service on the server's database (a synchronous engine beside the
    server's async one), with the server franking key, the attachment store, and the
    evidence, audit-anchor and staff (TOTP sealing) keys from ``<data_dir>`` (created 0600 on
    first start; in cluster mode every node must share these files, like the franking key).

    Referrals to NCMEC are configured from the file's ``[referrals]`` table and the
    environment (``TIDINGS_CYBERTIP_URL``, ``..._USERNAME``, ``..._PASSWORD``,
    ``..._CONTACT_EMAIL`` win: `load_referrals`); with no URL they stay off (preparing needs a
    contact, submitting a URL). Lawful-request packages
    are signed with ``<data_dir>/lawful_signing.key``; requesters' official e-mail domains,
    the sender, the portal's URL and the mail relay come from the ``[lawful]`` table and the
    ``TIDINGS_LAWFUL_*`` / ``TIDINGS_SMTP_URL`` variables (`load_lawful_settings`; without a
    relay, verification links are written to ``<data_dir>/mail-outbox``).

    Raises:
        ReferralConfigError: the referral settings are invalid.  LawfulConfigError: the
            ``[lawful]`` settings are invalid."""
    service = SafetyService.open(
        config.database_url or sqlite_url(config.data_dir),
        schema=config.database_schema,
        franking_keys=FrankingKeyRing([FrankingKey("server", franking_key)]),
        evidence_keys=load_evidence_keys(config.data_dir / EVIDENCE_KEYS_FILE),
        fetcher=safety_http.StoreAttachmentFetcher(attachments),
        anchor_key=load_anchor_key(config.data_dir / AUDIT_ANCHOR_FILE),
        staff_key=load_staff_key(config.data_dir / STAFF_KEY_FILE),
        clock=clock,
        on_enforcement=on_enforcement,
    )
    try:
        service.referrals.config, service.referrals.reporter = load_referrals(config.referrals)
        service.retention = RetentionSettings.from_config(config)
        service.lawful.signing_key = load_lawful_signing_key(
            config.data_dir / LAWFUL_SIGNING_KEY_FILE
        )
        service.lawful.configure(load_lawful_settings(config.lawful, config.data_dir))
    except BaseException:
        service.close()
        raise
    return service


def detection_key_paths(config: ServerConfig) -> tuple[Path, Path]:
    """(PSI secret file, list-signing key file): ``detection_key_file`` and
    ``detection_signing_key_file``, by default beside ``franking_key_file`` when that is set
    (the directory of the keys every node of a cluster shares), else in the data directory."""
    base = config.data_dir
    if config.franking_key_file is not None:
        base = config.franking_key_file.parent
    return (
        config.detection_key_file or base / DETECTION_KEY_FILE,
        config.detection_signing_key_file or base / DETECTION_SIGNING_KEY_FILE,
    )


def build_detection(
    config: ServerConfig,
    safety: SafetyService,
    attachments: AttachmentStore,
    *,
    clock: Callable[[], int] = now_ms,
) -> DetectionService:
    """Detection over the safety service (its vault, cases, audit, banks and repository),
    the attachment store (list bytes and matched attachments) and the detection keys
    (`detection_key_paths`, created 0600 on first use); set as ``safety.detection``.

    Raises:
        InvalidKeyError: a key file holds something else than a key.  OSError.
        TypeError: the safety service has no detection repository.
    """
    if safety.detection_repo is None:
        raise TypeError("the safety service has no detection repository")
    secret_file, signing_file = detection_key_paths(config)
    detection = DetectionService(
        repository=safety.detection_repo,
        banks=banks_device_list(safety.banks),
        vault=safety.vault,
        cases=safety.cases,
        audit=safety.audit,
        blobs=StoreListBlobs(attachments),
        fetcher=safety_http.StoreAttachmentFetcher(attachments),
        keys=DetectionKeys.load(secret_file, signing_file),
        threshold=config.detection_threshold,
        params=replace(DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=config.detection_synthetic_ppm),
        clock=clock,
        matcher=safety.bank_matcher,  # one index per node, shared with reported attachments
    )
    safety.detection = detection
    return detection


async def detection_round(detection: DetectionService) -> bool:
    """One processing round in a worker thread (`DetectionService.run_round`); True when it
    took a full batch (more may wait). A failure is logged by its class and retried next
    round: accepted vouchers stay stored until processed. Never raises (but cancellation)."""
    try:
        result = await asyncio.to_thread(detection.run_round)
    except Exception as exc:
        log.warning("detection round failed", extra={"error": type(exc).__name__})
        return False
    return result.processed >= PROCESS_BATCH


async def _detect_forever(detection: DetectionService, wake: asyncio.Event) -> None:
    while True:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
        # arrives as the event is set (gh-86296), and the node's shutdown then waits forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DETECTION_INTERVAL_S):
                await wake.wait()
        wake.clear()
        if await detection_round(detection):
            wake.set()


def open_safety(config: ServerConfig) -> SafetyService:
    """The safety service alone (for `tidings admin` commands), migrated to the current
    schema; no messaging server is started."""
    attachments_dir = prepare_data_dir(config.data_dir)
    service = build_safety(
        config,
        franking_key=load_franking_key(config),
        attachments=build_attachment_store(config, attachments_dir),
    )
    service.migrate()
    return service


def open_detection(config: ServerConfig) -> tuple[SafetyService, DetectionService]:
    """The safety service (as `open_safety`) with its detection service (for `tidings admin
    detection`); close the safety service when done."""
    attachments_dir = prepare_data_dir(config.data_dir)
    store = build_attachment_store(config, attachments_dir)
    service = build_safety(config, franking_key=load_franking_key(config), attachments=store)
    service.migrate()
    try:
        detection = build_detection(config, service, store, clock=service.clock)
    except BaseException:
        service.close()
        raise
    return service, detection


async def wake_account(state: ServerState, username: str) -> None:
    """Wake every WebSocket of ``username`` (on every node, through the hub): each re-checks
    the account's enforcement and closes if it is now banned or suspended; every node's cached
    credentials and enforcement of the account are dropped (`LocalHub.invalidate`)."""
    try:
        account_id = await state.store.account_id(username)
    except TidingsError:
        return  # no such account (any more): nothing to wake
    # Every node forgets the account's cached credentials and enforcement, and wakes its
    # connections: each re-checks the enforcement.
    await state.hub.invalidate(account_id)


def create_app(config: ServerConfig) -> FastAPI:
    """Build the ASGI app for ``config``; the database is migrated when the app starts."""
    state = build_state(config)
    loops: list[asyncio.AbstractEventLoop] = []

    def on_enforcement(username: str) -> None:
        # Called by the (synchronous) safety side, from a worker thread, right after an
        # enforcement row is stored.
        if loops and not loops[0].is_closed():
            # This node's cache first, as the loop's next callback: no request it serves
            # after the decision returned finds the old enforcement.
            loops[0].call_soon_threadsafe(state.cache.forget_username, username)
            asyncio.run_coroutine_threadsafe(wake_account(state, username), loops[0])

    safety = build_safety(
        config,
        franking_key=state.franking_key,
        attachments=state.attachments,
        clock=state.clock,
        on_enforcement=on_enforcement,
    )
    sweep = QueueSweep(state.store, state.hub, interval_s=config.sweep_interval_s)
    directory = build_key_directory(config, state)
    publisher = EpochPublisher(
        directory, interval_s=config.kt_epoch_seconds, metrics=state.metrics
    )
    detection = build_detection(config, safety, state.attachments, clock=state.clock)
    detection_wake = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.db.migrate()
        loops.append(asyncio.get_running_loop())
        await state.hub.start()
        await sweep.start()  # the lost-hint safety net of every connection here
        await publisher.start()  # key transparency: an epoch now, then every interval
        # Uploads cut off by a crash of this node (or another one on the same store).
        await _purge_task(state, "orphan_uploads", lambda: remove_orphan_uploads(state))
        try:
            await asyncio.to_thread(detection.check_threshold)
        except TidingsError as exc:
            raise ConfigError(exc.message) from None
        purge = asyncio.create_task(_purge_forever(state, safety))
        detection_wake.set()  # a first round at once: what a previous run left pending
        detect = (
            asyncio.create_task(_detect_forever(detection, detection_wake))
            if config.detection_enabled
            else None
        )
        try:
            yield
        finally:
            # Every acknowledged send is already committed; stopping loses nothing.
            for task in (purge, detect):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await sweep.stop()
            await publisher.stop()
            await state.cache.close()
            await state.hub.stop()
            await state.limiter.close()
            await state.store.close()
            await state.db.close()
            safety.close()
            loops.clear()

    app = FastAPI(title="Tidings", version=__version__, lifespan=lifespan)
    state.preserved_attachments = safety.holds.preserved_attachments
    app.state.tidings = state
    app.state.safety = safety
    app.state.detection = detection
    app.state.sweep = sweep
    app.state.kt = directory
    app.state.kt_publisher = publisher
    app.include_router(build_router())
    for module in (accounts, keys, messages, websocket, attachments, kt):
        app.include_router(module.router)

    async def limit_reports(device: AuthenticatedDevice) -> None:
        # Per account: a report costs the provider review time, and a refused one as well.
        await state.limiter.hit(
            "report", str(device.account_id), config.rate_reports_per_hour, 3600
        )

    app.include_router(
        safety_http.build_router(
            safety,
            authenticated_device,
            authenticate_any=authenticated_device_any,
            limit_report=limit_reports,
            error_docs=openapi.errors,
        )
    )

    async def limit_vouchers(device: AuthenticatedDevice) -> None:
        # Per account: a flood of (synthetic or garbage) vouchers costs storage and work.
        await state.limiter.hit(
            "detection_voucher", str(device.account_id), config.rate_vouchers_per_hour, 3600
        )

    app.include_router(
        build_detection_router(
            detection,
            authenticated_device,
            limit_voucher=limit_vouchers,
            on_voucher=detection_wake.set,
            accept_vouchers=config.detection_enabled,
            error_docs=openapi.errors,
        )
    )
    # /openapi.json: every error answer documented, device auth declared (server/openapi.py).
    openapi.install(app)
    # The staff console over the same service (sign-in: password + TOTP; `tidings server`
    # prints the first admin's credentials on an empty data directory).
    app.mount("/console", build_console(safety, clock=state.clock))

    async def limit_portal(address: str) -> None:
        await state.limiter.hit(
            "lawful_portal", address, config.rate_lawful_portal_per_hour, 3600
        )

    # The requester portal for lawful requests: public, apart from the console, no session
    # (tidings.console.portal); in a cluster every node derives one CSRF key from staff.key.
    staff_repo = safety.staff_repo
    app.mount("/lawful-portal", build_portal(
        safety.lawful,
        secret=staff_repo.derived_key(PORTAL_CSRF_KEY_LABEL)
        if isinstance(staff_repo, SqlStaffRepository) else None,
        limit=limit_portal,
    ))

    @app.exception_handler(TidingsError)
    async def _typed_error(_: Request, exc: TidingsError) -> JSONResponse:
        return typed_error_response(exc, state.metrics)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug or an outage (database down): the class name goes to the log, nothing of the
        # request or the exception's text goes anywhere.
        log.error("unhandled error", extra={"error": type(exc).__name__})
        state.metrics.errors.labels(code="internal").inc()
        return JSONResponse(
            status_code=500,
            content={"error": {"code": "internal", "message": "internal server error"}},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods get the same error shape as everything else (documented in
        # /openapi.json components.responses); a body that is not JSON is `malformed`.
        code = openapi.HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        state.metrics.errors.labels(code=code).inc()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            headers["Allow"] = ", ".join(openapi.allowed_methods(app, request.scope))
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": {"code": code, "message": str(exc.detail)}},
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        state.metrics.errors.labels(code="malformed").inc()
        where = ".".join(str(p) for p in exc.errors()[0].get("loc", ())) if exc.errors() else ""
        return JSONResponse(
            status_code=400,
            content={"error": {"code": "malformed", "message": f"invalid request at {where}"}},
        )

    # Innermost: PUT /v1/messages/{username} answered ahead of the router when nothing about
    # it is unusual, else handed on (the same answers: tidings.server.fast_send).
    app.add_middleware(FastSend)
    # The 413 for a declared Content-Length, metrics by route template and the access log
    # (a pure ASGI middleware: tidings.server.middleware).
    app.add_middleware(
        LimitsAndMetrics, metrics=state.metrics, max_bytes=MAX_JSON_BODY, exempt={UPLOAD_PATH}
    )
    app.add_middleware(ChunkedBodyLimit, max_bytes=MAX_JSON_BODY, exempt={UPLOAD_PATH})

    if config.trusted_proxies:
        # Outermost, so every layer (rate limits, the console's lockout and its https checks)
        # sees the client the proxy names; only these peers may name one (tidings.server.
        # serving turns uvicorn's own, loopback-trusting handling off).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies))

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
