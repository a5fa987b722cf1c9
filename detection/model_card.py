"""The model card as operators read it in the admin: Markdown rendered, plots inline, no machine paths.

A card is written by the training run on a developer's machine: its image links are file names next
to the weights, and it quotes absolute paths (``/home/…/manifest.csv``) that mean nothing to an
operator and reveal a machine's layout. Plots are served from the bundled weights folder only.
"""

from __future__ import annotations

import re
from pathlib import Path

import markdown
from django.conf import settings
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

PLOTS_DIR = Path(settings.BASE_DIR) / "detection" / "weights"
PLOT_NAME = re.compile(r"^[\w-]+\.png$")
# Two or more path segments from the root: "/work/shared/data/manifest.csv" → "manifest.csv".
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])(?:/[\w.-]+){2,}/([\w.-]+)")
PLOT_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([\w-]+\.png)\)")


def plot_path(name: str) -> Path | None:
    if not PLOT_NAME.match(name):
        return None
    path = PLOTS_DIR / name
    return path if path.is_file() else None


def strip_paths(text: str) -> str:
    return ABSOLUTE_PATH.sub(r"\1", text)


def render_card(text: str) -> SafeString:
    """Markdown → HTML; links to bundled plots become inline images. Raw HTML in the card is escaped."""
    text = strip_paths(text)

    def plot(match: re.Match[str]) -> str:
        label, name = match.group(1), match.group(2)
        if plot_path(name) is None:
            return label
        url = reverse("model-plot", kwargs={"name": name})
        return f"\n\n![{label}]({url})\n\n"

    text = PLOT_LINK.sub(plot, text)
    html = markdown.markdown(text.replace("<", "&lt;"), extensions=["tables"])
    html = html.replace("<img ", '<img style="max-width: 100%; height: auto" loading="lazy" ')
    return mark_safe(f'<div class="gw-model-card">{html}</div>')


def round_metric(value: object) -> str:
    """Operators compare versions at a glance: 0.9987 not 0.998698…, whole numbers stay whole."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
