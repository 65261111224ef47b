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


# --- mailyard dkim keygen ---------------------------------------------------


def keygen_argv(out, *extra: str) -> list[str]:
    return [
        "dkim", "keygen", "--domain", "Example.com", "--selector", "s2026e",
        "--algorithm", "ed25519", "--out", str(out), *extra,
    ]  # fmt: skip


def test_dkim_keygen_writes_a_key_and_prints_its_record(capsys, tmp_path, no_logging):
    out = tmp_path / "example.com.ed25519.pem"
    assert main(keygen_argv(out)) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.startswith('s2026e._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=')
    assert stdout.count("\n") == 1
    assert f"key_file: {out}" in stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_dkim_keygen_needs_no_config(capsys, monkeypatch, tmp_path, no_logging):
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus: true\n", encoding="utf-8")
    monkeypatch.setenv("MAILYARD_CONFIG", str(bad))
    monkeypatch.setenv("MAILYARD_BROKER__URL", "http://not-a-broker/")
    assert main(keygen_argv(tmp_path / "k.pem")) == 0
    assert "IN TXT" in capsys.readouterr().out


def test_dkim_keygen_refuses_to_overwrite_unless_forced(capsys, tmp_path, no_logging):
    out = tmp_path / "k.pem"
    out.write_bytes(b"the key in use\n")
    assert main(keygen_argv(out)) == 2
    assert capsys.readouterr() == ("", f"mailyard: {out} exists; give --force to replace it\n")
    assert out.read_bytes() == b"the key in use\n"
    inode = os.stat(out).st_ino
    assert main(keygen_argv(out, "--force")) == 0
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert os.stat(out).st_ino != inode  # replaced at once, as a watched file should change
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temporary file left


def test_dkim_keygen_never_writes_through_a_symlink(capsys, tmp_path, no_logging):
    target = tmp_path / "elsewhere"
    link = tmp_path / "k.pem"
    link.symlink_to(target)  # dangling
    assert main(keygen_argv(link)) == 2
    assert not target.exists()


def test_dkim_keygen_says_why_it_cannot_write(capsys, tmp_path, no_logging):
    out = tmp_path / "no" / "such" / "dir" / "k.pem"
    assert main(keygen_argv(out)) == 1
    assert capsys.readouterr().err == (f"mailyard: cannot write {out}: No such file or directory\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dkim"], "dkim needs a subcommand: keygen"),
        (["dkim", "bogus"], "dkim needs a subcommand: keygen"),
        (["dkim", "keygen", "--domain", "example.com"], "needs --selector, --algorithm, --out"),
        (["dkim", "keygen", "--domain", "bad_domain", "--selector", "s"], "not a valid domain"),
        (["dkim", "keygen", "--domain", "a.test", "--selector", "s_1"], "not a valid selector"),
        (["dkim", "keygen", "--domain", "a.test", "--selector", "s", "--algorithm", "dsa"],
         "invalid choice: 'dsa'"),
        (["dkim", "keygen", "--domain", "a.test", "--selector", "s", "--algorithm", "ed25519",
          "--out", "k.pem", "--bits", "2048"], "--bits is only for --algorithm rsa"),
    ],
)  # fmt: skip
def test_dkim_keygen_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: mailyard" in err
    assert message in err


@pytest.mark.parametrize("bits", ["1024", "1536", "8192"])
def test_dkim_keygen_makes_no_rsa_key_outside_rfc_8301(capsys, tmp_path, bits):
    out = tmp_path / "k.pem"
    argv = keygen_argv(out, "--bits", bits)
    argv[argv.index("ed25519")] = "rsa"
    assert main(argv) == 2
    assert "2048 to 4096 bits (RFC 8301)" in capsys.readouterr().err
    assert not out.exists()


def test_a_dkim_key_that_cannot_sign_stops_start_up_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(logs, "configure", lambda level: None)
    missing = tmp_path / "missing.pem"
    config = tmp_path / "mailyard.yaml"
    config.write_text(
        f"dkim:\n  keys:\n    - {{domain: example.com, selector: s1, key_file: {missing}}}\n",
        encoding="utf-8",
    )
    assert main(["queue", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"mailyard: dkim.keys[0].key_file: cannot read {missing}: No such file or directory\n"
    )
