"""Outcomes, measured and published: the admin page, its CSV and its plots (matplotlib, server-side).

The figures come from ``alerts.selectors.outcomes``; the API's ``/api/v1/outcomes`` serves the same rows.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from alerts.selectors import OUTCOME_COLUMNS, OUTCOME_DIMENSIONS, OutcomeRow, outcomes

DEFAULT_DAYS = 90
DIMENSION_TITLES = {"model": "Model version", "station": "Station", "device": "Device"}


def outcomes_window(params: dict[str, str]) -> tuple[datetime, datetime | None]:
    """``since``/``until`` (ISO datetimes) from a query string; the last 90 days by default."""
    since = parse_datetime(params.get("since") or "") or timezone.now() - timedelta(days=DEFAULT_DAYS)
    until = parse_datetime(params.get("until") or "")
    return since, until


def _staff(request: HttpRequest) -> None:
    if not (request.user.is_authenticated and request.user.is_staff):
        raise PermissionDenied("Outcomes are for administrators.")


@login_required
def outcomes_page(request: HttpRequest) -> HttpResponse:
    _staff(request)
    since, until = outcomes_window(request.GET)
    tables = [
        {"by": by, "title": DIMENSION_TITLES[by], "rows": outcomes(by, since=since, until=until)}
        for by in OUTCOME_DIMENSIONS
    ]
    query = request.GET.urlencode()
    return render(request, "alerts/outcomes.html", {"tables": tables, "since": since, "until": until, "query": query})


@login_required
def outcomes_csv(request: HttpRequest) -> HttpResponse:
    _staff(request)
    since, until = outcomes_window(request.GET)
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="gunwatch-outcomes.csv"'
    writer = csv.writer(response)
    writer.writerow(["by", *OUTCOME_COLUMNS])
    for by in OUTCOME_DIMENSIONS:
        for row in outcomes(by, since=since, until=until):
            values = row.as_dict()
            writer.writerow([by, *("" if values[c] is None else values[c] for c in OUTCOME_COLUMNS)])
    return response


@login_required
def outcomes_plot(request: HttpRequest, by: str) -> HttpResponse:
    _staff(request)
    if by not in OUTCOME_DIMENSIONS:
        raise Http404
    since, until = outcomes_window(request.GET)
    png = outcomes_png(outcomes(by, since=since, until=until)[:20], title=DIMENSION_TITLES[by])
    return HttpResponse(png, content_type="image/png", headers={"Cache-Control": "private, max-age=60"})


SEGMENTS = (
    ("confirmed_gunfire", "confirmed gunfire", "#2e7d32"),
    ("false_alarms", "false alarm", "#c62828"),
    ("other_sources", "other source", "#ef6c00"),
    ("dismissed_in_review", "dismissed in review", "#8e24aa"),
    ("no_evidence", "no evidence found", "#757575"),
    ("open", "still open", "#90a4ae"),
)


def outcomes_png(rows: list[OutcomeRow], *, title: str) -> bytes:
    """What became of each one's incidents, as stacked horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 0.45 * max(len(rows), 2) + 1.6), dpi=100)
    axes = figure.subplots()
    labels = [row.key for row in rows]
    left = [0.0] * len(rows)
    for attribute, label, colour in SEGMENTS:
        values = [float(getattr(row, attribute)) for row in rows]
        axes.barh(labels, values, left=left, label=label, color=colour)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, row in enumerate(rows):
        share = row.confirmed_share
        axes.text(
            left[y] + 0.1, y, f"{share:.0%} confirmed" if share is not None else "no verdicts", va="center", fontsize=8
        )
    axes.invert_yaxis()
    axes.set_xlabel("incidents")
    axes.set_title(f"Outcomes by {title.lower()}", fontsize=10)
    axes.set_xlim(0, max([*left, 1.0]) * 1.3)
    # Below the axes, never over a bar or its "% confirmed" label.
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
