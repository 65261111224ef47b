"""The command line: bad configuration and bad commands end with status 2."""

from __future__ import annotations

import getpass
import io
import os
import sys

import pytest

from mailyard import logs
from mailyard.cli import main
from mailyard.ingress.auth import verify_password


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


# --- mailyard auth hash -----------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def pipe(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.fixture
def no_logging(monkeypatch):
    """auth hash prints to stdout; setting up the JSON logs there would spoil it."""

    def refuse(*args, **kwargs):
        raise AssertionError("auth hash configured logging")

    monkeypatch.setattr(logs, "configure", refuse)


@pytest.mark.parametrize(
    ("data", "password"),
    [
        (b"s3cret\n", "s3cret"),
        (b"s3cret", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b" spaced out \n", " spaced out "),  # only the newline goes
        (b"two lines\n\n", "two lines\n"),  # only one newline goes
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_auth_hash_reads_a_password_from_a_pipe(capsys, monkeypatch, no_logging, data, password):
    pipe(monkeypatch, data)
    assert main(["auth", "hash"]) == 0
    out, err = capsys.readouterr()
    stored = out.removesuffix("\n")
    assert out.endswith("\n")
    assert "\n" not in stored
    assert stored.startswith("$scrypt$ln=14,r=8,p=1$")
    assert verify_password(password, stored)
    assert password.strip() == password or not verify_password(password.strip(), stored)
    assert err == ""


def test_auth_hash_needs_no_config(capsys, monkeypatch, tmp_path, no_logging):
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus: true\n", encoding="utf-8")
    monkeypatch.setenv("MAILYARD_CONFIG", str(bad))
    monkeypatch.setenv("MAILYARD_BROKER__URL", "http://not-a-broker/")
    pipe(monkeypatch, b"pw\n")
    assert main(["auth", "hash"]) == 0
    assert verify_password("pw", capsys.readouterr().out.strip())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "mailyard: the password is empty\n"),
        (b"\n", "mailyard: the password is empty\n"),
        (b"\r\n", "mailyard: the password is empty\n"),
        (b"caf\xe9\n", "mailyard: the password is not valid UTF-8\n"),
    ],
)
def test_auth_hash_refuses_an_unusable_password(capsys, monkeypatch, data, message):
    pipe(monkeypatch, data)
    assert main(["auth", "hash"]) == 2
    assert capsys.readouterr() == ("", message)


def test_auth_hash_asks_twice_on_a_terminal(capsys, monkeypatch):
    prompts = []
    answers = iter(["typed", "typed"])

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert main(["auth", "hash"]) == 0
    assert prompts == ["Password: ", "Again: "]
    assert verify_password("typed", capsys.readouterr().out.strip())


@pytest.mark.parametrize(("first", "second"), [("typed", "tpyed"), ("", "")])
def test_auth_hash_on_a_terminal_refuses_mismatch_and_empty(capsys, monkeypatch, first, second):
    answers = iter([first, second])
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert main(["auth", "hash"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("mailyard: the password")


@pytest.mark.parametrize("argv", [["auth"], ["auth", "bogus"], ["all", "hash"]])
def test_auth_needs_its_subcommand_and_others_take_none(capsys, monkeypatch, argv):
    # Should "all hash" get past the parser, a bad config stops it before any service starts.
    monkeypatch.setenv("MAILYARD_BROKER__URL", "http://not-a-broker/")
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: mailyard" in capsys.readouterr().err
