"""A tiny builder for Grafana dashboards (the classic JSON model, schemaVersion 39).

Dashboards are written as rows of panels; :func:`dashboard` lays them out on
Grafana's 24-column grid (left to right, wrapping), numbers the panels, and adds
the ``datasource`` variable that every panel and target uses. Nothing here
knows about Mailyard: the dashboards themselves are in ``dashboards.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

GRID_WIDTH = 24
SCHEMA_VERSION = 39
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}

# Colours that mean something, for series whose legend says what they are.
GOOD, WARN, BAD, INFO = "green", "yellow", "red", "blue"


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False

    def render(self, ref_id: str) -> JSON:
        return {
            "datasource": DATASOURCE,
            "expr": self.expr,
            "instant": self.instant,
            "range": not self.instant,
            "legendFormat": self.legend or "__auto",
            "refId": ref_id,
        }


@dataclass(frozen=True)
class Panel:
    """A panel before layout: everything but its id and position."""

    body: JSON
    width: int
    height: int

    @property
    def targets(self) -> list[JSON]:
        return list(self.body.get("targets", []))


@dataclass(frozen=True)
class Row:
    title: str
    panels: Sequence[Panel] = field(default_factory=tuple)
    # A variable's name: Grafana draws the row once per value of it.
    repeat: str = ""


def _targets(targets: Iterable[Target]) -> list[JSON]:
    return [t.render(chr(ord("A") + i)) for i, t in enumerate(targets)]


def _color_overrides(colors: dict[str, str] | None) -> list[JSON]:
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
        }
        for name, color in (colors or {}).items()
    ]


def _thresholds(steps: Sequence[tuple[str, float | None]]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    defaults: JSON,
    options: JSON,
    overrides: list[JSON] | None = None,
    width: int,
    height: int,
) -> Panel:
    if not description.strip():
        raise ValueError(f"panel {title!r} needs a description that says what bad looks like")
    if not 0 < width <= GRID_WIDTH:
        raise ValueError(f"panel {title!r}: width {width} does not fit the grid")
    body = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options,
        "targets": _targets(targets),
    }
    return Panel(body, width, height)


def timeseries(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    stack: bool = False,
    colors: dict[str, str] | None = None,
    max_value: float | None = None,
    width: int = 12,
    height: int = 8,
) -> Panel:
    defaults: JSON = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if max_value is not None:
        defaults["max"] = max_value
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        defaults=defaults,
        options=options,
        overrides=_color_overrides(colors),
        width=width,
        height=height,
    )


def stat(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    thresholds: Sequence[tuple[str, float | None]] = ((GOOD, None),),
    no_value: str = "0",
    width: int = 4,
    height: int = 4,
) -> Panel:
    defaults = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(thresholds),
        "noValue": no_value,
    }
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return _panel(
        "stat",
        title,
        description,
        targets,
        defaults=defaults,
        options=options,
        width=width,
        height=height,
    )


def bargauge(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    width: int = 8,
    height: int = 8,
) -> Panel:
    defaults = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "continuous-BlPu"},
        "thresholds": _thresholds(((GOOD, None),)),
    }
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
        "minVizHeight": 10,
        "minVizWidth": 0,
    }
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        defaults=defaults,
        options=options,
        width=width,
        height=height,
    )


def row(title: str, *panels: Panel, repeat: str = "") -> Row:
    """A row of panels; with ``repeat``, one row per value of that (multi-value) variable."""
    return Row(title, panels, repeat)


def datasource_variable() -> JSON:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> JSON:
    """A variable filled from ``label_values(...)``; empty when the label does not exist.

    ``multi``: several values may be picked, and All (what a repeated row needs).
    """
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "current": {},
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def _layout(rows: Sequence[Row]) -> list[JSON]:
    """Rows one under the other; each row's panels left to right, wrapping at 24."""
    laid: list[JSON] = []
    y = 0
    next_id = 1
    for r in rows:
        heading: JSON = {
            "id": next_id,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "type": "row",
            "title": r.title,
            "collapsed": False,
            "panels": [],
        }
        if r.repeat:
            heading["repeat"] = r.repeat
        laid.append(heading)
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for p in r.panels:
            if x + p.width > GRID_WIDTH:
                y += line_height
                x, line_height = 0, 0
            laid.append(
                {"id": next_id, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y}, **p.body}
            )
            next_id += 1
            x += p.width
            line_height = max(line_height, p.height)
        y += line_height
    return laid


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    tags: Sequence[str],
    rows: Sequence[Row],
    variables: Sequence[JSON] = (),
    refresh: str = "30s",
    time_from: str = "now-6h",
) -> JSON:
    """A complete dashboard: the ``datasource`` variable first, then ``variables``."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(tags),
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "Mailyard",
                "type": "dashboards",
                "tags": list(tags[:1]),
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": _layout(rows),
    }


def expressions(board: JSON) -> list[tuple[str, str]]:
    """Every (panel title, PromQL expression) of a dashboard, in panel order."""
    return [
        (panel["title"], t["expr"])
        for panel in board["panels"]
        for t in panel.get("targets", [])
        if t.get("expr")
    ]
