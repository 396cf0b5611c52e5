"""A client for NCMEC's CyberTipline Reporting API: submit, upload, fileinfo, finish; status
and retract (issue 11).

The documented workflow (https://report.cybertip.org/ispws/documentation/index.html, read
2026-12-02; see docs/referrals.md for everything this relies on):

- ``GET /status``: checks the connection and the credentials;
- ``POST /submit`` (``text/xml``, a ``<report>``): opens a report, answers its ``reportId``;
- ``POST /upload`` (multipart ``id`` + ``file``): adds one file, answers its ``fileId`` and
  the MD5 the server computed;
- ``POST /fileinfo`` (``text/xml``, a ``<fileDetails>``): describes one uploaded file;
- ``POST /finish`` (form ``id``): completes the report, answers the file ids it holds;
- ``POST /retract`` (form ``id``): cancels a report *before* it is finished.

HTTP Basic authentication over HTTPS. An unfinished report is deleted by NCMEC 24 hours after
it was opened or 1 hour after its last upload or file details, whichever is later.

**No duplicate reports.** The API has no idempotency key: a second ``/submit`` opens a second
report. So a referral carries its progress (`ReferralProgress`), handed to a `ProgressSink`
(the caller stores it and audits the step) *before and after* each request:

- the state is ``submitting`` before ``/submit`` is sent; a run that finds it so (a crash, a
  lost answer) never submits again;
- once ``/submit`` answered a ``reportId``, every retry resumes at the next step (the next
  file to upload or describe, then ``/finish``), never at ``/submit``;
- ``/submit`` is retried only when the request provably did not reach NCMEC (no connection
  was made; HTTP 429; a documented error answer, which opens no report). When it may have
  reached NCMEC and the answer was lost (a read timeout, a dropped connection, a 5xx without
  a documented answer, an unreadable answer), the referral becomes ``submit_uncertain`` and
  `ReferralSubmitUncertainError` is raised: a person decides (`CyberTiplineClient.reopen`).
  The documented API offers no way to ask which reports an account opened; an orphaned
  report is never finished (its id is unknown to us), so NCMEC deletes it within a day, and
  resubmitting then cannot leave two *finished* reports. That is the case for a person to
  weigh, not for a retry loop.
- ``/upload``, ``/fileinfo`` and ``/finish`` are retried with exponential backoff on
  transient failures. A lost ``/upload`` answer can leave one extra, undescribed file inside
  the same report (never a second report); ``/finish`` answering "already finished" (5102)
  on a retry counts as done.

Credentials come from `ReferralConfig` (see `load_referral_config` for the environment
names); the password is never in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import httpx

from tidings.clock import Clock, now_ms
from tidings.errors import (
    ClearinghouseAuthError,
    ClearinghouseError,
    ClearinghouseRejectedError,
    ClearinghouseReportClosedError,
    ClearinghouseResponseError,
    ClearinghouseUnavailableError,
    ClearinghouseUnknownReportError,
    InvalidReferralError,
    ReferralConfigError,
    ReferralStateError,
    ReferralSubmitUncertainError,
)
from tidings.media.digests import content_digests
from tidings.safety.cybertip_xml import (
    MAX_RESPONSE_BYTES,
    ClearinghouseResponse,
    file_details_xml,
    parse_response,
    report_xml,
)
from tidings.safety.outbound import is_loopback_host
from tidings.safety.referral_model import Referral

log = logging.getLogger(__name__)

ENV_URL: Final = "TIDINGS_CYBERTIP_URL"
ENV_USERNAME: Final = "TIDINGS_CYBERTIP_USERNAME"
ENV_PASSWORD: Final = "TIDINGS_CYBERTIP_PASSWORD"  # noqa: S105 (a variable's name)

PRODUCTION_URL: Final = "https://report.cybertip.org/ispws"
TEST_URL: Final = "https://exttest.cybertip.org/ispws"
"""NCMEC's documented base URLs (production; the test environment for integration)."""

_XML: Final = {"Content-Type": "text/xml; charset=utf-8"}

# responseCode -> error class (the documented codes; 0 is success).
_CODE_ERRORS: Final[Mapping[int, type[ClearinghouseError]]] = {
    **dict.fromkeys((1000, 1100, 1110, 1111, 1300), ClearinghouseUnavailableError),
    **dict.fromkeys((2000, 3000, 3100, 3300), ClearinghouseAuthError),
    **dict.fromkeys((4000, 4100, 4110, 4200), ClearinghouseRejectedError),
    **dict.fromkeys((1210, 5001, 5002), ClearinghouseUnknownReportError),
    **dict.fromkeys((5101, 5102), ClearinghouseReportClosedError),
}
ALREADY_RETRACTED: Final = 5101
ALREADY_FINISHED: Final = 5102


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReferralConfig:
    """Where and as whom referrals are sent. ``url`` is the API's base (``.../ispws``): HTTPS,
    or plain HTTP to a loopback address (the tests' local server) only."""

    url: str
    username: str
    password: str = field(repr=False)
    timeout_s: float = 30.0
    """Per request: connect, write, read each (uploads of large files may need more)."""
    max_attempts: int = 4
    """Tries of one retryable step, the first included."""
    backoff_s: float = 1.0
    """Wait before the second try; doubled before each further one, up to `max_backoff_s`."""
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            raise ReferralConfigError("the CyberTipline URL may not hold credentials")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
            raise ReferralConfigError("the CyberTipline URL must be HTTPS (HTTP: loopback only)")
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise ReferralConfigError("the CyberTipline URL must be an https:// URL")
        if not self.username or not self.password:
            raise ReferralConfigError("the CyberTipline username and password are required")
        if ":" in self.username:
            raise ReferralConfigError("a Basic-auth username cannot hold ':'")
        if not (0 < self.timeout_s <= 3600 and 1 <= self.max_attempts <= 20):
            raise ReferralConfigError("timeout_s must be 0-3600 s and max_attempts 1-20")
        if not 0 <= self.backoff_s <= self.max_backoff_s <= 3600:
            raise ReferralConfigError("backoff_s must be 0 .. max_backoff_s (at most 3600 s)")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


def load_referral_config(
    table: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> ReferralConfig | None:
    """The referral configuration from the ``[referrals]`` table of the server's TOML file
    (keys ``url``, ``username``, ``password``, ``timeout_s``, ``max_attempts``,
    ``backoff_s``, ``max_backoff_s``), overridden by the environment:

    - ``TIDINGS_CYBERTIP_URL``: the API's base URL (e.g. NCMEC's test environment first);
    - ``TIDINGS_CYBERTIP_USERNAME``, ``TIDINGS_CYBERTIP_PASSWORD``: the Basic-auth
      credentials NCMEC issued (prefer the environment to the file for the password).

    Returns None when no URL is configured (referrals are off).

    Raises:
        ReferralConfigError: an unknown key, a value of the wrong type, or an invalid
            configuration (see `ReferralConfig`).
    """
    values: dict[str, object] = dict(table or {})
    known = {"url", "username", "password", "timeout_s", "max_attempts", "backoff_s"}
    known.add("max_backoff_s")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ReferralConfigError(f"unknown setting(s) in [referrals]: {', '.join(unknown)}")
    environ = os.environ if env is None else env
    for key, name in (("url", ENV_URL), ("username", ENV_USERNAME), ("password", ENV_PASSWORD)):
        if environ.get(name):
            values[key] = environ[name]
    if not values.get("url"):
        return None
    try:
        return ReferralConfig(
            url=str(values["url"]),
            username=str(values.get("username", "")),
            password=str(values.get("password", "")),
            timeout_s=float(str(values.get("timeout_s", 30.0))),
            max_attempts=int(str(values.get("max_attempts", 4))),
            backoff_s=float(str(values.get("backoff_s", 1.0))),
            max_backoff_s=float(str(values.get("max_backoff_s", 30.0))),
        )
    except ValueError:
        raise ReferralConfigError("a [referrals] number setting is not a number") from None


# --- progress (the idempotency state) --------------------------------------------------------


class ReferralState(StrEnum):
    """Where a referral's submission stands. Values are stable (stored)."""

    PENDING = "pending"  # nothing sent
    SUBMITTING = "submitting"  # /submit sent, its answer not yet recorded
    OPEN = "open"  # NCMEC answered a reportId; files and finish may remain
    FINISHED = "finished"
    RETRACTED = "retracted"
    SUBMIT_UNCERTAIN = "submit_uncertain"  # /submit's answer was lost: a person decides
    EXPIRED = "expired"  # NCMEC no longer knows the open report (deleted unfinished)


@dataclass(frozen=True, slots=True)
class FileProgress:
    """One file: its NCMEC ``fileId`` once uploaded, and whether its details were sent."""

    file_key: str
    file_id: str | None = None
    details_sent: bool = False


@dataclass(frozen=True, slots=True)
class ReferralProgress:
    """What has been done for one referral. Store it as the sink receives it; pass the
    latest back to resume."""

    referral_id: str
    state: ReferralState = ReferralState.PENDING
    report_id: str | None = None
    opened_ms: int | None = None
    files: tuple[FileProgress, ...] = ()

    @classmethod
    def start(cls, referral: Referral) -> ReferralProgress:
        files = tuple(FileProgress(f.file_key) for f in referral.files)
        return cls(referral.referral_id, files=files)

    def file(self, file_key: str) -> FileProgress:
        for f in self.files:
            if f.file_key == file_key:
                return f
        return FileProgress(file_key)

    def with_file(self, updated: FileProgress) -> ReferralProgress:
        rest = tuple(f for f in self.files if f.file_key != updated.file_key)
        ordered = sorted((*rest, updated), key=lambda f: self._order(f.file_key))
        return replace(self, files=tuple(ordered))

    def _order(self, file_key: str) -> int:
        keys = [f.file_key for f in self.files]
        return keys.index(file_key) if file_key in keys else len(keys)


@dataclass(frozen=True, slots=True)
class StepEvent:
    """One step for the case history and the audit log: ``step`` the endpoint (or
    ``reopen``), ``outcome`` what happened, ``response_code`` NCMEC's when it answered,
    ``by`` the staff member for a person's action. Holds no report content."""

    referral_id: str
    step: str
    outcome: str
    at_ms: int
    report_id: str | None = None
    file_key: str | None = None
    response_code: int | None = None
    by: str | None = None


ProgressSink = Callable[[ReferralProgress, StepEvent], Awaitable[None]]
"""Stores the progress and records the event; awaited before the client goes on (so a crash
after it never repeats a recorded step). It should raise if it cannot store: then nothing
further is sent."""


# --- the client ------------------------------------------------------------------------------


class _Lost(Exception):  # an internal signal: never escapes this module
    """A request whose answer never arrived; ``delivered``: it may have reached the server."""

    def __init__(self, delivered: bool, what: str) -> None:
        super().__init__(what)
        self.delivered = delivered
        self.what = what


class CyberTiplineClient:
    """The documented workflow against ``config.url``. ``http``: an `httpx.AsyncClient` to
    use (the caller closes it); else one is made (over ``transport`` if given) and closed by
    `aclose`. ``sleep`` and ``clock`` are injectable for tests."""

    def __init__(
        self,
        config: ReferralConfig,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock = now_ms,
    ) -> None:
        self.config = config
        self._owned = http is None
        self._http = http or httpx.AsyncClient(transport=transport, follow_redirects=False)
        self._auth = httpx.BasicAuth(config.username, config.password)
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"CyberTiplineClient(url={self.config.base_url!r}, user={self.config.username!r})"

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    # --- single endpoints ---

    async def status(self) -> ClearinghouseResponse:
        """``GET /status``: the connection and credentials work.

        Raises:
            ClearinghouseAuthError, ClearinghouseUnavailableError, ClearinghouseResponseError.
        """
        return await self._retrying("status", lambda: self._request("GET", "status"))

    async def send(
        self,
        referral: Referral,
        contents: Mapping[str, bytes],
        sink: ProgressSink,
        progress: ReferralProgress | None = None,
    ) -> ReferralProgress:
        """Submit ``referral`` (or resume it from ``progress``): submit, then upload and
        describe each file not done yet (``contents`` maps each file's key to its bytes),
        then finish. Every step goes through ``sink``. Returns the finished progress.

        Raises:
            InvalidReferralError: the referral cannot be written as XML, a file's bytes are
                missing or do not have the MD5 the referral states (checked before sending).
            ReferralSubmitUncertainError: /submit may have opened a report whose answer was
                lost (now, or in an earlier run); a person must `reopen` it.
            ReferralStateError: the referral was retracted or expired (`reopen` an expired one).
            ClearinghouseError: (subclasses) NCMEC refused a step, or failed more often than
                ``max_attempts``; the progress stays resumable unless NCMEC no longer knows
                the report (then it is ``expired``).
        """
        p = progress or ReferralProgress.start(referral)
        if p.referral_id != referral.referral_id:
            raise InvalidReferralError("the progress belongs to another referral")
        if p.state is ReferralState.FINISHED:
            return p
        if p.state is ReferralState.SUBMITTING:
            p = await self._record(sink, p, ReferralState.SUBMIT_UNCERTAIN, "submit", "uncertain")
        if p.state is ReferralState.SUBMIT_UNCERTAIN:
            raise ReferralSubmitUncertainError()
        if p.state in {ReferralState.RETRACTED, ReferralState.EXPIRED}:
            raise ReferralStateError(f"the referral is {p.state.value}")
        document = report_xml(referral)
        details = {f.file_key: f for f in referral.files}
        for f in referral.files:
            data = contents.get(f.file_key)
            if data is None or content_digests(data).md5 != f.md5:
                raise InvalidReferralError(f"file {f.file_key}: bytes missing or not its MD5")
        if p.state is ReferralState.PENDING:
            p = await self._record(sink, p, ReferralState.SUBMITTING, "submit", "sending")
            p = await self._submit(sink, p, document)
        report_id = p.report_id
        assert report_id is not None  # OPEN always has one
        try:
            for key, file in details.items():
                fp = p.file(key)
                if fp.file_id is None:
                    fp = await self._upload(report_id, key, file.file_name, contents[key], file.md5)
                    p = await self._record(sink, p.with_file(fp), p.state, "upload", "ok", key)
                if not fp.details_sent:
                    assert fp.file_id is not None
                    await self._describe(file_details_xml(report_id, fp.file_id, file))
                    fp = replace(fp, details_sent=True)
                    p = await self._record(sink, p.with_file(fp), p.state, "fileinfo", "ok", key)
            await self._retrying(
                "finish",
                lambda: self._request("POST", "finish", form={"id": report_id}),
                done_codes=frozenset({ALREADY_FINISHED}),
            )
        except ClearinghouseUnknownReportError as exc:
            await self._record(
                sink, p, ReferralState.EXPIRED, exc.step, "unknown_report", code=exc.response_code
            )
            raise
        return await self._record(sink, p, ReferralState.FINISHED, "finish", "ok")

    async def retract(
        self, progress: ReferralProgress, sink: ProgressSink, *, by: str
    ) -> ReferralProgress:
        """``POST /retract``: cancel an open (unfinished) report, for staff member ``by``.
        "Already retracted" (5101) counts as done.

        Raises:
            ReferralStateError: ``by`` is empty, or the referral has no open report (pending,
                finished: the API retracts only unfinished reports; a finished one takes
                NCMEC's own process).
            ClearinghouseReportClosedError: NCMEC says the report is already finished.
            ClearinghouseError: (subclasses) NCMEC refused or failed.
        """
        if not by:
            raise ReferralStateError("retracting a referral takes a named staff member")
        report_id = progress.report_id
        if progress.state is not ReferralState.OPEN or report_id is None:
            raise ReferralStateError(f"a {progress.state.value} referral cannot be retracted")
        await self._retrying(
            "retract",
            lambda: self._request("POST", "retract", form={"id": report_id}),
            done_codes=frozenset({ALREADY_RETRACTED}),
        )
        return await self._record(sink, progress, ReferralState.RETRACTED, "retract", "ok", by=by)

    async def reopen(
        self, progress: ReferralProgress, sink: ProgressSink, *, by: str
    ) -> ReferralProgress:
        """A person's decision that an uncertain or expired referral may be submitted afresh
        (recorded under ``by``): the progress returns to ``pending`` with no report id.

        Raises:
            ReferralStateError: the referral is neither ``submit_uncertain`` nor ``expired``,
                or ``by`` is empty.
        """
        if not by:
            raise ReferralStateError("reopening a referral takes a named staff member")
        if progress.state not in {ReferralState.SUBMIT_UNCERTAIN, ReferralState.EXPIRED}:
            raise ReferralStateError(f"a {progress.state.value} referral cannot be reopened")
        fresh = ReferralProgress(
            progress.referral_id, files=tuple(FileProgress(f.file_key) for f in progress.files)
        )
        event = StepEvent(
            progress.referral_id,
            "reopen",
            progress.state.value,
            self._clock(),
            report_id=progress.report_id,
            by=by,
        )
        await sink(fresh, event)
        return fresh

    # --- steps ---

    async def _submit(
        self, sink: ProgressSink, p: ReferralProgress, document: bytes
    ) -> ReferralProgress:
        try:
            answer = await self._retrying(
                "submit", lambda: self._request("POST", "submit", document), lost_is_final=True
            )
        except _Lost:
            await self._record(sink, p, ReferralState.SUBMIT_UNCERTAIN, "submit", "uncertain")
            raise ReferralSubmitUncertainError() from None
        except ClearinghouseResponseError:
            # An unreadable answer to a request NCMEC received: a report may exist.
            await self._record(sink, p, ReferralState.SUBMIT_UNCERTAIN, "submit", "uncertain")
            raise ReferralSubmitUncertainError() from None
        except ClearinghouseError as exc:
            # A documented error answer: no report was opened; nothing to resume.
            await self._record(
                sink, p, ReferralState.PENDING, "submit", "refused", code=exc.response_code
            )
            raise
        if answer.report_id is None:
            await self._record(sink, p, ReferralState.SUBMIT_UNCERTAIN, "submit", "uncertain")
            raise ReferralSubmitUncertainError("the submit answer carries no reportId")
        opened = replace(p, report_id=answer.report_id, opened_ms=self._clock())
        return await self._record(sink, opened, ReferralState.OPEN, "submit", "ok")

    async def _describe(self, body: bytes) -> None:
        await self._retrying("fileinfo", lambda: self._request("POST", "fileinfo", body))

    async def _upload(
        self, report_id: str, key: str, name: str, data: bytes, md5: bytes
    ) -> FileProgress:
        answer = await self._retrying(
            "upload",
            lambda: self._request("POST", "upload", form={"id": report_id}, upload=(name, data)),
        )
        if answer.file_id is None:
            raise ClearinghouseResponseError("the upload answer carries no fileId", step="upload")
        if answer.md5_hex is not None and answer.md5_hex != md5.hex():
            # NCMEC holds other bytes than the ones described: never describe them.
            raise ClearinghouseResponseError("the uploaded file's MD5 differs", step="upload")
        return FileProgress(key, answer.file_id)

    async def _record(
        self,
        sink: ProgressSink,
        p: ReferralProgress,
        state: ReferralState,
        step: str,
        outcome: str,
        file_key: str | None = None,
        *,
        code: int | None = None,
        by: str | None = None,
    ) -> ReferralProgress:
        updated = replace(p, state=state)
        event = StepEvent(
            p.referral_id, step, outcome, self._clock(), updated.report_id, file_key, code, by
        )
        log.info("cybertip %s %s: %s (report %s)", p.referral_id, step, outcome, updated.report_id)
        await sink(updated, event)
        return updated

    # --- HTTP ---

    async def _retrying(
        self,
        step: str,
        attempt: Callable[[], Awaitable[ClearinghouseResponse]],
        *,
        lost_is_final: bool = False,
        done_codes: frozenset[int] = frozenset(),
    ) -> ClearinghouseResponse:
        """Run ``attempt`` until it succeeds, retrying transient failures with exponential
        backoff up to ``max_attempts``. ``lost_is_final``: a request that may have been
        delivered is not retried (`_Lost` propagates). ``done_codes``: answers that mean the
        desired state is already reached."""
        delay = self.config.backoff_s
        for number in range(1, self.config.max_attempts + 1):
            last = number == self.config.max_attempts
            try:
                answer = await attempt()
                if answer.response_code == 0 or answer.response_code in done_codes:
                    return answer
                raise _error_for(step, answer.response_code)
            except _Lost as lost:
                if lost_is_final and lost.delivered:
                    raise
                if last:
                    raise ClearinghouseUnavailableError(
                        f"{step}: {lost.what} ({number} tries)", step=step
                    ) from None
            except ClearinghouseResponseError as exc:
                # Unreadable: the step may or may not have happened. Repeating it is safe for
                # every step but /submit (whose caller makes it uncertain).
                exc.step = step
                if lost_is_final or last:
                    raise
            except ClearinghouseUnavailableError as exc:
                if last:
                    raise ClearinghouseUnavailableError(
                        f"{step}: {exc.message} ({number} tries)",
                        step=step,
                        response_code=exc.response_code,
                    ) from None
            except ClearinghouseError as exc:
                exc.step = step
                raise
            log.warning("cybertip %s: try %d failed; retrying in %.1f s", step, number, delay)
            await self._sleep(delay)
            delay = min(delay * 2, self.config.max_backoff_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self,
        method: str,
        path: str,
        xml: bytes | None = None,
        *,
        form: Mapping[str, str] | None = None,
        upload: tuple[str, bytes] | None = None,
    ) -> ClearinghouseResponse:
        """One request. Raises `_Lost` (no answer; ``delivered`` whether the request may have
        reached the server) or a `ClearinghouseError` for an HTTP-level refusal."""
        url = f"{self.config.base_url}/{path}"
        timeout = httpx.Timeout(self.config.timeout_s)
        try:
            if xml is not None:
                request = self._http.build_request(
                    method, url, content=xml, headers=_XML, timeout=timeout
                )
            elif upload is not None:
                request = self._http.build_request(
                    method, url, data=dict(form or {}), files={"file": upload}, timeout=timeout
                )
            else:
                data = dict(form) if form is not None else None
                request = self._http.build_request(method, url, data=data, timeout=timeout)
            response = await self._http.send(request, auth=self._auth, stream=True)
            try:
                body = await _read_limited(response)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise _Lost(False, "cannot connect") from None
        except httpx.TimeoutException:
            raise _Lost(True, "timed out") from None
        except httpx.TransportError:
            raise _Lost(True, "the connection broke") from None
        status = response.status_code
        if status in {401, 403}:
            raise ClearinghouseAuthError(f"{path}: HTTP {status}", step=path)
        if status == 429:
            raise _Lost(False, "rate limited (HTTP 429)")
        try:
            answer = parse_response(body)
        except ClearinghouseResponseError:
            if status >= 500:
                raise _Lost(True, f"HTTP {status} without a documented answer") from None
            if status >= 400:
                raise ClearinghouseRejectedError(f"{path}: HTTP {status}", step=path) from None
            raise
        return answer


async def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise ClearinghouseResponseError("the answer is larger than the limit")
    return bytes(body)


def _error_for(step: str, code: int) -> ClearinghouseError:
    kind = _CODE_ERRORS.get(code, ClearinghouseError)
    return kind(f"{step}: NCMEC answered responseCode {code}", step=step, response_code=code)
