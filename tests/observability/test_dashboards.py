"""The committed dashboards are what observability/dashboards.py generates, and follow the rules."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from observability.dashboards import BOARDS, OUT, stale

from tests.observability.artifacts import (
    DASHBOARDS,
    dashboard_expressions,
    dashboards,
    panels,
    require,
    rows,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_committed_json_is_what_the_generator_makes() -> None:
    assert OUT == DASHBOARDS
    outdated = stale()
    assert not outdated, (
        f"{', '.join(outdated)} under {DASHBOARDS} differ from observability/dashboards.py: "
        "run `make dashboards` and commit the result"
    )


def test_the_directory_holds_only_generated_dashboards() -> None:
    assert sorted(dashboards()) == sorted(BOARDS), "remove JSON the generator does not make"


def test_uids_are_stable_and_unique() -> None:
    uids = {name: board["uid"] for name, board in dashboards().items()}
    assert uids == {name: name.removesuffix(".json") for name in uids}
    assert set(uids.values()) >= {
        "mailyard-overview",
        "mailyard-ingress",
        "mailyard-queue",
        "mailyard-delivery",
        "mailyard-bounce",
    }


def test_every_board_has_the_datasource_and_namespace_variables() -> None:
    for name, board in dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        assert variables["namespace"]["datasource"] == DATASOURCE, name


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    for name, board in dashboards().items():
        for panel in panels(board):
            assert panel["datasource"] == DATASOURCE, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, (name, panel["title"])


def test_every_panel_says_what_bad_looks_like() -> None:
    for name, board in dashboards().items():
        for panel in panels(board):
            assert "Bad:" in panel.get("description", ""), (name, panel["title"])


def test_every_selector_is_scoped_to_the_namespace() -> None:
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel["targets"]:
                selectors = re.findall(r"[a-z_:]+\{([^}]*)\}", target["expr"])
                assert selectors, (name, panel["title"], target["expr"])
                for matchers in selectors:
                    assert 'namespace=~"$namespace"' in matchers, (name, panel["title"])


def test_panels_fit_the_grid_without_overlapping() -> None:
    for name, board in dashboards().items():
        taken: set[tuple[int, int]] = set()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0, (name, panel["title"])
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & taken, (name, panel["title"])
            taken |= cells


# --- traffic shaping (delivery) ----------------------------------------------------

SHAPING_METRICS = {
    "mailyard_delivery_shaping_sessions",
    "mailyard_delivery_shaping_limit",
    "mailyard_delivery_shaping_messages_total",
    "mailyard_delivery_shaping_throttled_total",
    "mailyard_delivery_shaping_paused",
    "mailyard_delivery_shaping_held_total",
    "mailyard_delivery_shaping_members",
}
ONE_DESTINATION = 'destination=~"$destination"'


def delivery_rows() -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    return rows(dashboards()["mailyard-delivery.json"])


def test_delivery_has_a_row_repeated_per_destination() -> None:
    board = dashboards()["mailyard-delivery.json"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    destination = variables["destination"]
    assert destination["multi"] is True, "a repeated row needs a multi-value variable"
    assert destination["includeAll"] is True
    assert destination["query"] == (
        'label_values(mailyard_delivery_shaping_limit{namespace=~"$namespace"}, destination)'
    )
    repeated = [
        (title, heading) for title, (heading, _) in delivery_rows().items() if "repeat" in heading
    ]
    assert [(title, heading["repeat"]) for title, heading in repeated] == [
        ("Destination: $destination", "destination")
    ]
    _, panels = delivery_rows()["Destination: $destination"]
    assert [p["title"] for p in panels] == [
        "Sessions and connection limit",
        "Messages per second and rate limit",
        "Throttling replies",
        "Share of transactions throttled",
        "Paused",
        "Jobs held back",
    ]
    for panel in panels:
        for target in panel["targets"]:
            for selector in re.findall(r"(mailyard_[a-z_]+)\{([^}]*)\}", target["expr"]):
                assert ONE_DESTINATION in selector[1], (panel["title"], target["expr"])
    # No other board uses the variable: it exists on delivery's only.
    for name, other in dashboards().items():
        if name != "mailyard-delivery.json":
            assert "$destination" not in json.dumps(other), name


def test_every_shaping_metric_has_a_panel() -> None:
    shown = {
        name
        for _, title, expr in dashboard_expressions()
        for name in re.findall(r"mailyard_delivery_shaping_[a-z_]+", expr)
    }
    assert shown == SHAPING_METRICS
    heading, cluster = delivery_rows()["Traffic shaping"]
    assert "repeat" not in heading
    assert [p["title"] for p in cluster] == [
        "Replicas sharing the limits",
        "Paused destinations",
        "Jobs held back, by reason",
        "Throttling replies per transaction",
    ]


# Two delivery pods; gmail.com is busy, the Outlook site (a pattern on MX names) throttles
# and is paused. Counters grow linearly, so rates over 5m are exact.
D1, D2 = 'pod="delivery-1"', 'pod="delivery-2"'
TO_GMAIL, TO_SITE = 'destination="gmail.com"', 'destination="*.protection.outlook.com"'
SHAPING_SERIES: list[tuple[str, str, str]] = [
    ("mailyard_delivery_shaping_members", D1, "2x10"),
    ("mailyard_delivery_shaping_members", D2, "2x10"),
    ("up", f'{D1}, component="delivery"', "1x10"),
    ("up", f'{D2}, component="delivery"', "1x10"),
    ("up", 'pod="queue-1", component="queue"', "1x10"),
    ("mailyard_delivery_shaping_sessions", f"{D1}, {TO_GMAIL}", "4x10"),
    ("mailyard_delivery_shaping_sessions", f"{D2}, {TO_GMAIL}", "5x10"),
    ("mailyard_delivery_shaping_sessions", f"{D1}, {TO_SITE}", "2x10"),
    ("mailyard_delivery_shaping_limit", f'{D1}, {TO_GMAIL}, limit="connections"', "10x10"),
    ("mailyard_delivery_shaping_limit", f'{D2}, {TO_GMAIL}, limit="connections"', "10x10"),
    ("mailyard_delivery_shaping_limit", f'{D1}, {TO_GMAIL}, limit="messages_per_second"', "50x10"),
    ("mailyard_delivery_shaping_limit", f'{D2}, {TO_GMAIL}, limit="messages_per_second"', "50x10"),
    ("mailyard_delivery_shaping_limit", f'{D1}, {TO_SITE}, limit="connections"', "4x10"),
    ("mailyard_delivery_shaping_messages_total", f"{D1}, {TO_GMAIL}", "0+600x10"),
    ("mailyard_delivery_shaping_messages_total", f"{D2}, {TO_GMAIL}", "0+1200x10"),
    ("mailyard_delivery_shaping_messages_total", f"{D1}, {TO_SITE}", "0+120x10"),
    ("mailyard_delivery_shaping_throttled_total", f"{D1}, {TO_GMAIL}", "0x10"),
    ("mailyard_delivery_shaping_throttled_total", f"{D1}, {TO_SITE}", "0+60x10"),
    ("mailyard_delivery_shaping_paused", f"{D1}, {TO_GMAIL}", "0x10"),
    ("mailyard_delivery_shaping_paused", f"{D1}, {TO_SITE}", "1x10"),
    ("mailyard_delivery_shaping_paused", f"{D2}, {TO_SITE}", "0x10"),
    ("mailyard_delivery_shaping_held_total", f'{D1}, {TO_GMAIL}, reason="busy"', "0+60x10"),
    ("mailyard_delivery_shaping_held_total", f'{D2}, {TO_SITE}, reason="paused"', "0+300x10"),
]
GMAIL = '{destination="gmail.com"}'
OUTLOOK = '{destination="*.protection.outlook.com"}'
# (row, panel, legend) → the samples its query must return; the repeated row for gmail.com.
SHAPING_EXPECTED: dict[tuple[str, str, str], list[tuple[str, float]]] = {
    ("Traffic shaping", "Replicas sharing the limits", "members (max)"): [("{}", 2)],
    ("Traffic shaping", "Replicas sharing the limits", "members (min)"): [("{}", 2)],
    ("Traffic shaping", "Replicas sharing the limits", "delivery pods up"): [("{}", 2)],
    ("Traffic shaping", "Paused destinations", "{{destination}}"): [(GMAIL, 0), (OUTLOOK, 1)],
    ("Traffic shaping", "Jobs held back, by reason", "{{reason}}"): [
        ('{reason="busy"}', 1),
        ('{reason="paused"}', 5),
    ],
    ("Traffic shaping", "Throttling replies per transaction", "{{destination}}"): [
        (GMAIL, 0),
        (OUTLOOK, 0.5),
    ],
    ("Destination", "Sessions and connection limit", "sessions"): [(GMAIL, 9)],
    ("Destination", "Sessions and connection limit", "limit"): [
        ('{destination="gmail.com", limit="connections"}', 10)
    ],
    ("Destination", "Messages per second and rate limit", "sent"): [(GMAIL, 30)],
    ("Destination", "Messages per second and rate limit", "limit"): [
        ('{destination="gmail.com", limit="messages_per_second"}', 50)
    ],
    ("Destination", "Throttling replies", "throttling replies"): [(GMAIL, 0)],
    ("Destination", "Share of transactions throttled", "throttled"): [(GMAIL, 0)],
    ("Destination", "Paused", "paused"): [(GMAIL, 0)],
    ("Destination", "Jobs held back", "{{reason}}"): [
        ('{destination="gmail.com", reason="busy"}', 1)
    ],
}


def grafana_query(expr: str, destination: str) -> str:
    """What Grafana sends: every namespace, one destination (regex-escaped), 5m rates."""
    expr = expr.replace("$__rate_interval", "5m").replace('"$namespace"', '".*"')
    return expr.replace('"$destination"', '"' + re.escape(destination).replace("\\", "\\\\") + '"')


def test_the_shaping_panels_compute_what_they_say(tmp_path: Path) -> None:
    """Each shaping query, evaluated by promtool over series with the exported names."""
    promtool = require("promtool")
    found = delivery_rows()
    tests = []
    for (row_title, panel_title, legend), samples in SHAPING_EXPECTED.items():
        title = "Destination: $destination" if row_title == "Destination" else row_title
        [panel] = [p for p in found[title][1] if p["title"] == panel_title]
        [target] = [t for t in panel["targets"] if t["legendFormat"] == legend]
        tests.append(
            {
                "expr": grafana_query(target["expr"], "gmail.com"),
                "eval_time": "10m",
                "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
            }
        )
    covered = {(r, p) for r, p, _ in SHAPING_EXPECTED}
    for title, (_, shown) in found.items():
        if title in ("Traffic shaping", "Destination: $destination"):
            short = "Destination" if title.startswith("Destination") else title
            for panel in shown:
                assert (short, panel["title"]) in covered, f"{title} / {panel['title']}: no case"
    namespaced = {
        f'{metric}{{namespace="mail", {labels}}}': values
        for metric, labels, values in SHAPING_SERIES
    }
    spec = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in namespaced.items()],
                "promql_expr_test": tests,
            }
        ],
    }
    path = tmp_path / "shaping.test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
