"""The DSN settings (queue.delay_warning, bounce.dsn_window) reach the config, checked first."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mailyard.config import load_settings
from tests.chart.helm import one, render, render_error


def config_text(docs: list[dict]) -> str:
    return one(docs, "ConfigMap", "mx-mailyard-config")["data"]["mailyard.yaml"]


def test_the_notice_settings_reach_the_config_file_the_app_reads(tmp_path: Path) -> None:
    path = tmp_path / "mailyard.yaml"
    path.write_text(config_text(render("notices-values.yaml")))
    settings = load_settings(path)
    assert settings.queue.delay_warning == timedelta(hours=4)
    assert settings.bounce.dsn_window == timedelta(seconds=10)
    assert settings.bounce.max_quoted_message == 5 * 1024 * 1024


def test_by_default_no_delay_warning_and_a_five_second_window() -> None:
    config = yaml.safe_load(config_text(render("default-values.yaml")))
    assert "delay_warning" not in config.get("queue", {})
    assert "dsn_window" not in config.get("bounce", {})


@pytest.mark.parametrize(
    "setting",
    ["config.queue.delay_warning=soon", "config.bounce.dsn_window=a while"],
)
def test_a_duration_that_is_none_is_refused_by_the_schema(setting: str) -> None:
    error = render_error("default-values.yaml", settings=(setting,))
    assert setting.split("=")[0].split(".")[-1] in error
