"""The committed dashboards are what observability/dashboards.py generates, and follow the rules."""

from __future__ import annotations

import re

from observability.dashboards import BOARDS, OUT, stale

from tests.observability.artifacts import DASHBOARDS, dashboards, panels

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
