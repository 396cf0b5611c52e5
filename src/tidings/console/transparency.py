"""The transparency report as HTML (`tidings.safety.transparency`): bar charts computed here
and drawn as inline SVG by the templates (``_transparency.html``), each with a text
alternative and the table of its numbers beside it. No external asset, no script: the same
markup serves the console page (``transparency.html``) and the standalone file
``tidings transparency --html FILE`` writes (``transparency_report.html``, styles inline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidings.safety.transparency import Figure, FigureStatus, TransparencyReport

from .rendering import template_environment

__all__ = [
    "Bar",
    "Chart",
    "charts_of",
    "label_of",
    "overview_of",
    "render_report_html",
    "report_values",
]

CHART_WIDTH = 560
LABEL_WIDTH = 220
VALUE_WIDTH = 50
ROW_HEIGHT = 26
BAR_HEIGHT = 18
BAR_AREA = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
OVERVIEW = (
    ("reports", "verified"),
    ("cases", "opened"),
    ("actions", "enforcements"),
    ("appeals", "filed"),
    ("appeals", "reversals"),
    ("detection", "matches"),
    ("referrals", "escalated"),
)
"""The figures of the "at a glance" chart, (section, figure)."""


def label_of(key: str) -> str:
    """A stored key as words: ``escalate_referral`` -> ``escalate referral``."""
    return key.replace("_", " ")


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    y: int
    width: int

    @property
    def text_y(self) -> int:
        return self.y + BAR_HEIGHT - 4


@dataclass(frozen=True, slots=True)
class Chart:
    """One horizontal bar chart: ``id`` for its title's and description's ids, ``desc`` its
    text alternative (every bar's label and value)."""

    id: str
    title: str
    desc: str
    height: int
    bars: tuple[Bar, ...]
    width: int = CHART_WIDTH
    label_width: int = LABEL_WIDTH
    bar_area: int = BAR_AREA


def _chart(chart_id: str, title: str, rows: list[tuple[str, int]]) -> Chart:
    top = max((n for _, n in rows), default=0)
    bars = tuple(
        Bar(
            label,
            n,
            i * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) // 2,
            # A non-zero count always shows (at least 2 px); bars scale to the largest.
            max(2, n * BAR_AREA // top) if n and top else 0,
        )
        for i, (label, n) in enumerate(rows)
    )
    desc = f"{title}: " + "; ".join(f"{label} {n}" for label, n in rows) + "."
    return Chart(chart_id, title, desc, max(1, len(rows)) * ROW_HEIGHT, bars)


def charts_of(report: TransparencyReport) -> dict[str, Chart]:
    """The chart of each figure with a breakdown, keyed ``section.figure``."""
    charts: dict[str, Chart] = {}
    for section in report.sections:
        for figure in section.figures:
            if figure.breakdown_label and figure.status is FigureStatus.COUNTED:
                key = f"{section.key}.{figure.key}"
                rows = [(label_of(k), n) for k, n in figure.breakdown]
                title = f"{figure.label} by {figure.breakdown_label}"
                charts[key] = _chart("chart-" + key.replace(".", "-"), title, rows)
    return charts


def overview_of(report: TransparencyReport) -> Chart:
    """The "at a glance" chart: the period's main counted figures side by side."""
    rows: list[tuple[str, int]] = []
    for section_key, figure_key in OVERVIEW:
        figure: Figure = report.section(section_key).figure(figure_key)
        rows.append((figure.label, figure.value or 0))
    return _chart("chart-overview", f"At a glance, {report.period.label}", rows)


def report_values(report: TransparencyReport) -> dict[str, Any]:
    """What ``_transparency.html`` is rendered with, on the console page as in the standalone
    document: the report, its charts (`charts_of`, `overview_of`), `label_of` and the
    figure statuses (``S``)."""
    return {
        "report": report,
        "charts": charts_of(report),
        "overview": overview_of(report),
        "label_of": label_of,
        "S": FigureStatus,
    }


def render_report_html(report: TransparencyReport) -> str:
    """The standalone HTML document of ``report`` (inline styles, inline SVG charts, no
    external URL, no script)."""
    template = template_environment().get_template("transparency_report.html")
    return template.render(**report_values(report))
