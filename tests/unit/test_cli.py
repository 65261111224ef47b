"""The command line: bad configuration and bad commands end with status 2."""

from __future__ import annotations

import os

import pytest

from mailyard.cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("MAILYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILYARD_HOSTNAME", "cli.example")


@pytest.mark.parametrize(
    "command", ["all", "ingress", "queue", "delivery", "bounce", "check-broker"]
)
def test_bad_config_file_returns_2_and_names_the_key(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingress:\n  max_message_size: 10\n  bogus: true\n", encoding="utf-8")
    assert main([command, "--config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"mailyard: invalid configuration in {bad}:")
    assert "ingress.max_message_size" in captured.err
    assert "ingress.bogus: unknown key" in captured.err


def test_missing_config_file_returns_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["all", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"mailyard: cannot read config file {missing}: No such file or directory\n"
    )


def test_config_file_from_the_environment(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics:\n  port: 0\n", encoding="utf-8")
    monkeypatch.setenv("MAILYARD_CONFIG", str(bad))
    assert main(["all"]) == 2
    assert "metrics.port" in capsys.readouterr().err


def test_bad_environment_value_returns_2(capsys, monkeypatch):
    monkeypatch.setenv("MAILYARD_BROKER__URL", "http://rabbit/")
    assert main(["all"]) == 2
    error = capsys.readouterr().err
    assert "broker.url: must be 'embedded' or start with amqp:// or amqps://" in error


@pytest.mark.parametrize("argv", [["bogus"], [], ["all", "--no-such-option"]])
def test_bad_command_line_exits_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: mailyard" in capsys.readouterr().err


def test_unknown_command_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["bogus"])
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err
    for name in ("ingress", "queue", "delivery", "bounce", "all", "check-broker"):
        assert name in err


@pytest.mark.parametrize("service", ["ingress", "queue", "delivery", "bounce"])
def test_split_services_refuse_the_embedded_spool(capsys, monkeypatch, tmp_path, service):
    monkeypatch.setenv("MAILYARD_BROKER__URL", "embedded")
    monkeypatch.setenv("MAILYARD_BROKER__SPOOL_DIR", str(tmp_path))
    assert main([service]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "one process owns a spool, so only `mailyard all` can run on it" in line
    assert list(tmp_path.iterdir()) == []  # refused before touching the spool
