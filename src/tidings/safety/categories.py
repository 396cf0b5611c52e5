"""Report categories, their severity, queues, SLAs, and the ordered routing rules.

The category list follows common industry practice (the Tech Coalition / DTSP abuse taxonomies,
the categories platforms publish in transparency reports): child sexual exploitation first and
apart, then threats of violence, terrorism and violent extremism, harassment, self-harm, spam,
fraud and a catch-all.

Contract:

- every `Category` has exactly one `CategoryPolicy` (severity, base queue priority, SLA, default
  queue); `policy_for` never fails for a valid category;
- routing is an ordered list of `RoutingRule` (first match wins) behind a `Router` that *always*
  evaluates the child-safety fast path first: no configured rule can send a child sexual
  exploitation report anywhere but a child-safety queue, and the child-safety queue accepts
  nothing else by mistake (a rule may not target it for another category);
- queues are plain data (`Queue`) with a ``child_safety`` flag that `tidings.safety.staff`
  enforces together with the staff member's child-safety permission.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from tidings.errors import SafetyInputError
from tidings.wire.report import ReportCategory as Category

__all__ = [
    "CATEGORY_POLICIES",
    "CSE_FAST_PATH",
    "DEFAULT_QUEUES",
    "DEFAULT_RULES",
    "HOUR_MS",
    "MINUTE_MS",
    "Category",
    "CategoryPolicy",
    "ConversationKind",
    "Queue",
    "QueueId",
    "Router",
    "RoutingDecision",
    "RoutingInput",
    "RoutingRule",
    "Severity",
    "dominant_category",
    "policy_for",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


class Severity(IntEnum):
    """Ordered: a case takes the highest severity of its reports."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class ConversationKind(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


class QueueId(StrEnum):
    """The default queues. Operators may add queues; ids are plain strings in storage."""

    CHILD_SAFETY = "child_safety"
    VIOLENCE = "violence"
    SELF_HARM = "self_harm"
    HARASSMENT = "harassment"
    FRAUD_SPAM = "fraud_spam"
    GENERAL = "general"


@dataclass(frozen=True, slots=True)
class Queue:
    """A review queue. ``child_safety`` queues are open only to staff holding the child-safety
    permission (see `tidings.safety.staff`)."""

    queue_id: str
    title: str
    child_safety: bool = False


DEFAULT_QUEUES: Mapping[str, Queue] = {
    q.queue_id: q
    for q in (
        Queue(QueueId.CHILD_SAFETY, "Child safety", child_safety=True),
        Queue(QueueId.VIOLENCE, "Violent threats and terrorism"),
        Queue(QueueId.SELF_HARM, "Self-harm"),
        Queue(QueueId.HARASSMENT, "Harassment"),
        Queue(QueueId.FRAUD_SPAM, "Fraud and spam"),
        Queue(QueueId.GENERAL, "General"),
    )
}


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    """Severity, base priority (higher is reviewed first), SLA and default queue of a category."""

    category: Category
    severity: Severity
    base_priority: int
    sla_ms: int
    default_queue: str


# SLAs: imminent-harm categories get an hour (CSE, terrorism — cf. the EU TCO one-hour removal
# rule — and self-harm, where a welfare check may be needed); threats four hours; the rest days.
CATEGORY_POLICIES: Mapping[Category, CategoryPolicy] = {
    p.category: p
    for p in (
        CategoryPolicy(
            Category.CHILD_SEXUAL_EXPLOITATION,
            Severity.CRITICAL,
            1000,
            HOUR_MS,
            QueueId.CHILD_SAFETY,
        ),
        CategoryPolicy(Category.TERRORISM, Severity.CRITICAL, 900, HOUR_MS, QueueId.VIOLENCE),
        CategoryPolicy(Category.SELF_HARM, Severity.HIGH, 850, HOUR_MS, QueueId.SELF_HARM),
        CategoryPolicy(Category.VIOLENT_THREAT, Severity.HIGH, 800, 4 * HOUR_MS, QueueId.VIOLENCE),
        CategoryPolicy(Category.HARASSMENT, Severity.MEDIUM, 500, 24 * HOUR_MS, QueueId.HARASSMENT),
        CategoryPolicy(Category.FRAUD, Severity.MEDIUM, 400, 48 * HOUR_MS, QueueId.FRAUD_SPAM),
        CategoryPolicy(Category.SPAM, Severity.LOW, 200, 72 * HOUR_MS, QueueId.FRAUD_SPAM),
        CategoryPolicy(Category.OTHER, Severity.LOW, 100, 72 * HOUR_MS, QueueId.GENERAL),
    )
}


def policy_for(category: Category | str) -> CategoryPolicy:
    """The policy of ``category`` (a `Category` or its string value).

    Raises:
        SafetyInputError: not a known category.
    """
    try:
        return CATEGORY_POLICIES[Category(category)]
    except ValueError:
        raise SafetyInputError("unknown report category") from None


def dominant_category(categories: Iterable[Category]) -> Category:
    """The most severe category (ties: higher base priority). Raises `SafetyInputError` if empty."""
    ranked = sorted(
        categories,
        key=lambda c: (CATEGORY_POLICIES[c].severity, CATEGORY_POLICIES[c].base_priority),
    )
    if not ranked:
        raise SafetyInputError("no categories")
    return ranked[-1]


@dataclass(frozen=True, slots=True)
class RoutingInput:
    """What routing may look at: never content, only the report's classification and shape."""

    category: Category
    conversation_kind: ConversationKind
    has_attachments: bool
    prior_enforcements: int = 0


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """One ordered routing rule. Every non-empty condition must hold for the rule to match.

    Plain data so it can live in a table: ``categories`` empty means any category,
    ``min_severity`` None means any, ``conversation_kind`` / ``has_attachments`` None mean any,
    ``min_prior_enforcements`` 0 means any.
    """

    name: str
    queue_id: str
    categories: frozenset[Category] = frozenset()
    min_severity: Severity | None = None
    conversation_kind: ConversationKind | None = None
    has_attachments: bool | None = None
    min_prior_enforcements: int = 0
    priority_boost: int = 0

    def matches(self, item: RoutingInput) -> bool:
        policy = CATEGORY_POLICIES[item.category]
        return (
            (not self.categories or item.category in self.categories)
            and (self.min_severity is None or policy.severity >= self.min_severity)
            and (self.conversation_kind is None or item.conversation_kind == self.conversation_kind)
            and (self.has_attachments is None or item.has_attachments == self.has_attachments)
            and item.prior_enforcements >= self.min_prior_enforcements
        )


CSE_FAST_PATH = RoutingRule(
    name="cse-fast-path",
    queue_id=QueueId.CHILD_SAFETY,
    categories=frozenset({Category.CHILD_SEXUAL_EXPLOITATION}),
)
"""Always evaluated first by `Router`; not configurable away."""

DEFAULT_RULES: Sequence[RoutingRule] = (
    # Repeat offenders reported for severe harm jump the queue.
    RoutingRule(
        name="repeat-severe",
        queue_id=QueueId.VIOLENCE,
        categories=frozenset({Category.VIOLENT_THREAT, Category.TERRORISM}),
        min_prior_enforcements=1,
        priority_boost=50,
    ),
    *(
        RoutingRule(
            name=f"default-{p.category.value}",
            queue_id=p.default_queue,
            categories=frozenset({p.category}),
        )
        for p in CATEGORY_POLICIES.values()
        if p.category is not Category.CHILD_SEXUAL_EXPLOITATION
    ),
)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    queue_id: str
    rule: str
    priority: int
    sla_ms: int
    severity: Severity


@dataclass(slots=True)
class Router:
    """Ordered routing with the child-safety fast path in front.

    Raises (on construction):
        SafetyInputError: a rule names an unknown queue, or a rule other than the fast path
            targets a child-safety queue (child-safety queues receive only CSE reports, so that
            staff cleared only for them are never shown other material by accident — and,
            conversely, so CSE material never lands in an uncleared queue).
    """

    rules: Sequence[RoutingRule] = DEFAULT_RULES
    queues: Mapping[str, Queue] = field(default_factory=lambda: dict(DEFAULT_QUEUES))
    fallback_queue: str = QueueId.GENERAL

    def __post_init__(self) -> None:
        for rule in (*self.rules, CSE_FAST_PATH):
            if rule.queue_id not in self.queues:
                raise SafetyInputError(f"routing rule {rule.name!r} names an unknown queue")
            if self.queues[rule.queue_id].child_safety and rule.categories != frozenset(
                {Category.CHILD_SEXUAL_EXPLOITATION}
            ):
                raise SafetyInputError(
                    f"routing rule {rule.name!r} sends non-CSE reports to a child-safety queue"
                )
        if self.fallback_queue not in self.queues or self.queues[self.fallback_queue].child_safety:
            raise SafetyInputError("fallback queue must exist and not be a child-safety queue")

    def route(self, item: RoutingInput) -> RoutingDecision:
        """Pick the queue for a report (or a case's dominant report).

        The CSE fast path is checked before any configured rule; a configured rule that also
        matches CSE is never consulted for it. Other categories: first matching rule, else the
        fallback queue.
        """
        policy = CATEGORY_POLICIES[item.category]
        if CSE_FAST_PATH.matches(item):
            rule = CSE_FAST_PATH
        else:
            rule = next(
                (r for r in self.rules if r.matches(item)),
                RoutingRule(name="fallback", queue_id=self.fallback_queue),
            )
        return RoutingDecision(
            queue_id=rule.queue_id,
            rule=rule.name,
            priority=policy.base_priority + rule.priority_boost,
            sla_ms=policy.sla_ms,
            severity=policy.severity,
        )
