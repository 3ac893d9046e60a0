"""Delivery to the webhook, never in an answer's way: an event is written to the database's
outbox (one insert, no network) and one background task sends the outbox, oldest first.

- A receiver that cannot be reached, times out, or says it is unavailable (502, 503, 504, 429)
  is waited for, with exponential backoff and jitter (429's Retry-After honoured, bounded):
  events wait in the outbox, across restarts too, and go out in order once it is back.
- A receiver failing on an event (500 and other 5xx, 408) gets webhook.max_attempts tries of it;
  one refusing it (any other 4xx, or a redirect, never followed) gets none more.
- A connection reset, dropped or timed out once made counts as a failure too when the receiver
  answered (any status) within the time max_attempts tries take: it is up, and this event may be
  what breaks it, which would otherwise hold every later one forever. Past that silence, or when
  no connection can be made, the receiver is taken for down and waited for.
- Past webhook.queue_size waiting events, the oldest are dropped.

Logs say what happened and the HTTP status, never the URL (it may hold a token) nor a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from bot.backoff import backoff
from bot.config import MIN_PSEUDONYM_SECRET, ConfigError, Settings
from bot.config_webhook import WebhookSettings
from bot.core.clock import now_ms
from bot.core.feedback_events import TAKING_BACK, FeedbackEvent
from bot.export.privacy import NameMask, Pseudonyms, person_names
from bot.storage.connection import Database
from bot.storage.outbox_store import Pending, Source, SqliteOutbox, SqlitePeopleNames
from bot.webhook.payload import encode, payload, signed_headers, webhook_pseudonyms

log = logging.getLogger(__name__)
OUTCOMES = ("sent", "failed", "dropped")
RESPONSE_BYTES = 64 * 1024  # a receiver's answer is read (keep-alive), never kept
FLUSH_S = 5.0  # at shutdown, what a receiver that answers may still take
UNAVAILABLE_STATUSES = {429, 502, 503, 504}  # the receiver, or the proxy before it, is not up
FAILED_STATUSES = {408}  # like a 5xx: the receiver failed on this event, it may not next time


class Outcome(enum.Enum):
    SENT = "sent"
    REFUSED = "refused"  # never worth sending again
    FAILED = "failed"  # counts one of the event's attempts
    UNAVAILABLE = "unavailable"  # waits, without using an attempt


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    detail: str  # an HTTP status or an exception's name, for the log
    retry_after_s: float | None = None
    reached: bool = True  # a connection was made: the receiver may have the event


def verdict(status: int, retry_after: str | None) -> Verdict:
    detail = f"HTTP {status}"
    if 200 <= status < 300:
        return Verdict(Outcome.SENT, detail)
    if status in UNAVAILABLE_STATUSES:
        return Verdict(Outcome.UNAVAILABLE, detail, _seconds(retry_after))
    if status >= 500 or status in FAILED_STATUSES:
        return Verdict(Outcome.FAILED, detail)
    return Verdict(Outcome.REFUSED, detail)


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is rare from webhook receivers: ignored)."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


class Webhook:
    """The feedback sink of bot.core.feedback_events, and the task that empties its outbox."""

    def __init__(
        self,
        settings: WebhookSettings,
        ids: Pseudonyms,
        outbox: SqliteOutbox,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        people: SqlitePeopleNames | None = None,
    ) -> None:
        assert settings.url is not None and settings.secret is not None
        self.settings = settings
        self.url = settings.url
        self._secret = settings.secret.get_secret_value().encode("utf-8")
        self.ids = ids
        self.outbox = outbox
        self.clock = clock
        self.events = Counter(
            "lucie_bot_webhook_events",
            "Feedback events for the webhook: sent, failed (refused or out of tries), dropped "
            "(the outbox was full)",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)  # shown at 0 before anything happens
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.people = people or SqlitePeopleNames(outbox.db)
        self._names: set[str] = set()
        self._mask = NameMask(set())
        self._answered_at: float | None = None  # time.monotonic() of the receiver's last answer

    @classmethod
    def build(cls, settings: Settings, db: Database, registry: CollectorRegistry) -> Webhook | None:
        """None when no webhook is configured."""
        webhook = settings.webhook
        if webhook.url is None:
            return None
        secret = settings.data.pseudonym_secret
        secret_text = secret.get_secret_value() if secret else ""
        if len(secret_text.strip()) < MIN_PSEUDONYM_SECRET:
            raise ConfigError(
                "webhook.url needs data.pseudonym_secret (at least "
                f"{MIN_PSEUDONYM_SECRET} characters): the events' pseudonyms are derived from it"
            )
        if webhook.secret is not None and webhook.secret.get_secret_value() == secret_text:
            # also refused when the settings load; here for settings made in code
            raise ConfigError("webhook.secret must differ from data.pseudonym_secret")
        if settings.data.collection == "off":
            log.warning('webhook.url is set but data.collection = "off": no event is sent')
        outbox = SqliteOutbox(db, webhook.queue_size)
        return cls(webhook, webhook_pseudonyms(secret_text), outbox, registry)

    async def emit(self, event: FeedbackEvent) -> None:
        include_text = self.settings.include_text
        names = self._mask
        if event.text is not None and include_text:
            names = await self._names_mask(event.sender)
        body = payload(event, self.ids, include_text, names)
        source = None
        if event.kind not in TAKING_BACK:
            source = Source(event.sender, event.room_id, event.source_event_id)
        dropped = await self.outbox.put(source, encode(body), now_ms())
        if dropped:
            self.events.labels("dropped").inc(dropped)
            log.warning("webhook outbox full: %d oldest events dropped", dropped)
        self._wake.set()

    async def take_back(self, room_id: str, source_event_id: str) -> bool:
        return await self.outbox.take_back(room_id, source_event_id)

    async def drop_person(self, user_id: str) -> None:
        await self.outbox.drop_person(user_id)

    async def forget(self, user_id: str) -> bool:
        return await self.outbox.forget_person(user_id)

    async def _names_mask(self, sender: str) -> NameMask:
        """The names exports mask (everyone the bot heard, bot.export.source.people_names) and
        the author's own, as of now: rebuilt only when someone new has spoken."""
        names = person_names(sender, None)
        for user_id, display_name in await self.people.new():
            names |= person_names(user_id, display_name)
        if not names <= self._names:
            self._names |= names
            self._mask = NameMask(self._names)
        return self._mask

    def start(self) -> None:
        if self._task is None:
            log.info("consented feedback goes to the webhook")  # never its URL: it may hold a token
            self._task = asyncio.create_task(self._run(), name="webhook")

    async def stop(self, flush_s: float = FLUSH_S) -> None:
        """Give a receiver that answers flush_s to take what waits; the rest stays in the
        outbox for the next start."""
        if self._task is not None:
            if not self._failing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(flush_s):
                        await self._idle.wait()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                self._wake.clear()  # before looking: an event put meanwhile wakes the wait
                head = await self.outbox.head()
                if head is None:
                    self._idle.set()
                    await self._wake.wait()
                    self._idle.clear()
                    continue
                claim = await self.outbox.claim(head.id)
                if claim is None:
                    continue  # taken back since it was read
                result = await self._post(head.body)
                if not result.reached:
                    await self.outbox.unclaim(claim)
                wait_s = await self._settle(head, result, failures)
            except Exception as exc:  # the database away for a moment: the task stays
                log.warning("webhook delivery paused: %s", type(exc).__name__)
                wait_s = backoff(failures, self.settings.max_backoff_s, jitter=True)
            failures = 0 if wait_s is None else failures + 1
            self._failing = wait_s is not None
            if wait_s:
                await asyncio.sleep(wait_s)

    async def _settle(self, head: Pending, result: Verdict, failures: int) -> float | None:
        """Count and log the try; how long to wait before the next (None: no failure)."""
        if result.outcome is Outcome.SENT:
            if failures:
                log.info("webhook receiver takes events again")
            await self.outbox.done(head.id)
            self.events.labels("sent").inc()
            return None
        if result.outcome is Outcome.REFUSED:
            log.warning("webhook receiver refused an event (%s); not sent again", result.detail)
            await self.outbox.done(head.id)
            self.events.labels("failed").inc()
            return None
        cap_s = self.settings.max_backoff_s
        if result.outcome is Outcome.FAILED:
            if head.attempts + 1 >= self.settings.max_attempts:
                log.warning("webhook receiver failed an event %d times (%s); given up",
                            head.attempts + 1, result.detail)  # fmt: skip
                await self.outbox.done(head.id)
                self.events.labels("failed").inc()
                return None
            await self.outbox.failed_once(head.id)
        elif failures == 0:
            log.warning("webhook receiver unavailable (%s); events wait", result.detail)
        wait_s = backoff(failures, cap_s, jitter=True)
        if result.retry_after_s is not None:  # longer only: "Retry-After: 0" would spin
            return min(max(result.retry_after_s, wait_s), cap_s)
        return wait_s

    async def _post(self, body: bytes) -> Verdict:
        headers = signed_headers(self._secret, str(int(self.clock())), body)
        try:
            async with self.http.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                self._answered_at = time.monotonic()
                await response.content.read(RESPONSE_BYTES)
                return verdict(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return Verdict(Outcome.UNAVAILABLE, type(exc).__name__, reached=False)  # down
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failed = Outcome.FAILED if self._answered_lately() else Outcome.UNAVAILABLE
            return Verdict(failed, type(exc).__name__)

    def _answered_lately(self) -> bool:
        """The receiver answered within the time max_attempts tries of one event take at most:
        all the tries of an event that breaks it fall within that time of its last answer."""
        if self._answered_at is None:
            return False
        settings = self.settings
        span_s = settings.max_attempts * (settings.timeout_s + settings.max_backoff_s)
        return time.monotonic() - self._answered_at <= span_s

    @property
    def http(self) -> aiohttp.ClientSession:
        """Made at first use, inside the running loop; one connection, since events go one at
        a time and in order."""
        if self._session is None:
            timeout_s = self.settings.timeout_s
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s),
                connector=aiohttp.TCPConnector(limit=1),
            )
        return self._session
