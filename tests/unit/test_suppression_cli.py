"""`mailyard suppression ...` against a real embedded spool in tmp_path (no sockets)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from mailyard.broker.embedded.spool import append_log_outside
from mailyard.cli import main
from mailyard.suppression.command import render_table
from mailyard.suppression.entries import Entry, Source
from mailyard.suppression.records import Added, encode

FIELDS = ["address", "scope", "reason", "class", "source", "since", "expires"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("MAILYARD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mailyard.yaml"
    path.write_text(f"broker:\n  url: embedded\n  spool_dir: {tmp_path / 'spool'}\n")
    return path


def run(capsys, config, *args: str) -> tuple[int, str, str]:
    code = main(["suppression", *args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys, config, *args: str) -> list[dict]:
    code, out, err = run(capsys, config, "list", "--json", *args)
    assert (code, err) == (0, "")
    return json.loads(out)  # the whole of standard output is one JSON array


def test_add_list_check_remove(capsys, config):
    code, out, _ = run(capsys, config, "add", "Bob@Example.COM", "--reason", "asked by phone")
    assert code == 0
    assert "Bob@example.com" in out
    [entry] = listed(capsys, config)
    assert list(entry) == FIELDS
    assert entry["address"] == "Bob@example.com"  # the domain folded, the local part kept
    assert (entry["scope"], entry["class"], entry["source"]) == (None, None, "manual")
    assert entry["reason"] == "asked by phone"
    assert entry["expires"] is None
    since = datetime.fromisoformat(entry["since"].replace("Z", "+00:00"))
    assert abs(since - datetime.now(UTC)) < timedelta(minutes=1)
    assert entry["since"].endswith("Z")

    code, out, _ = run(capsys, config, "check", "Bob@EXAMPLE.com")
    assert code == 0
    assert "Bob@example.com" in out
    assert "manual" in out
    code, out, _ = run(capsys, config, "check", "bob@example.com")  # another local part
    assert (code, out) == (1, "bob@example.com: not suppressed\n")

    code, out, _ = run(capsys, config, "remove", "Bob@example.com")
    assert code == 0
    assert out.startswith("removed 1 entry:")
    assert listed(capsys, config) == []
    assert run(capsys, config, "check", "Bob@example.com")[0] == 1
    code, out, _ = run(capsys, config, "remove", "Bob@example.com")
    assert code == 1
    assert "nothing removed" in out


def test_expires_and_scope(capsys, config):
    assert (
        run(capsys, config, "add", "a@x.test", "--expires", "30d", "--scope", "News.TEST")[0] == 0
    )
    [entry] = listed(capsys, config)
    assert entry["scope"] == "news.test"
    since = datetime.fromisoformat(entry["since"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(entry["expires"].replace("Z", "+00:00"))
    assert timedelta(days=30) - timedelta(seconds=2) <= expires - since <= timedelta(days=30)
    # Mail from news.test is held back; from anyone else it is not.
    assert run(capsys, config, "check", "a@x.test", "--scope", "news.test")[0] == 0
    assert run(capsys, config, "check", "a@x.test", "--scope", "shop.test")[0] == 1
    assert run(capsys, config, "check", "a@x.test")[0] == 0  # some entry holds it
    # Removing another scope removes nothing.
    assert run(capsys, config, "remove", "a@x.test", "--scope", "shop.test")[0] == 1
    assert run(capsys, config, "remove", "a@x.test", "--scope", "news.test")[0] == 0
    assert listed(capsys, config) == []


def test_an_expired_entry_is_not_listed_nor_suppressed(capsys, config):
    assert run(capsys, config, "add", "soon@x.test", "--expires", "1ms")[0] == 0
    assert listed(capsys, config) == []
    assert run(capsys, config, "check", "soon@x.test")[0] == 1


def test_list_by_source_and_json_of_check(capsys, config, tmp_path):
    now = datetime.now(UTC)
    bounced = Entry(
        "gone@x.test", None, "550 5.1.1 No such user", "InvalidRecipient", Source.BOUNCE, now,
        now + timedelta(days=365),
    )  # fmt: skip
    append_log_outside(tmp_path / "spool", "suppression", [encode(Added(bounced))])
    assert run(capsys, config, "add", "manual@x.test")[0] == 0
    assert [e["address"] for e in listed(capsys, config, "--source", "bounce")] == ["gone@x.test"]
    assert [e["address"] for e in listed(capsys, config)] == ["gone@x.test", "manual@x.test"]
    code, out, _ = run(capsys, config, "check", "gone@x.test", "--json")
    assert code == 0
    [entry] = json.loads(out)
    assert entry == bounced.as_json()
    code, out, _ = run(capsys, config, "check", "other@x.test", "--json")
    assert (code, json.loads(out)) == (1, [])


def test_the_table_is_like_postqueue(capsys, config):
    assert run(capsys, config, "add", "a@x.test")[0] == 0
    assert run(capsys, config, "remove", "a@x.test")[0] == 0
    assert run(capsys, config, "list") == (0, "Suppression list is empty\n", "")
    since = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    table = render_table(
        [
            Entry(
                "a@x.test", None, "550 5.1.1 gone", "InvalidRecipient", Source.BOUNCE, since, None
            ),
            Entry("longer@x.test", "news.test", "", None, Source.MANUAL, since, since),
        ]
    )
    assert table.splitlines() == [
        "ADDRESS        SCOPE      SOURCE  CLASS             SINCE                 EXPIRES               REASON",  # noqa: E501
        "a@x.test       *          bounce  InvalidRecipient  2025-06-01T10:00:00Z  never                 550 5.1.1 gone",  # noqa: E501
        "longer@x.test  news.test  manual  -                 2025-06-01T10:00:00Z  2025-06-01T10:00:00Z  -",  # noqa: E501
        "-- 2 entries",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "suppression needs a subcommand"),
        (["drop", "a@x.test"], "suppression needs a subcommand"),
        (["add"], "suppression add needs an ADDRESS"),
        (["check", "not-an-address"], "is not of the form local-part@domain"),
        (["list", "a@x.test"], "unrecognized arguments"),
        (["list", "--reason", "r"], "--reason is not for suppression list"),
        (["check", "a@x.test", "--expires", "1d"], "--expires is not for suppression check"),
        (["add", "a@x.test", "--expires", "soon"], "is not a duration"),
        (["add", "a@x.test", "--expires", "0s"], "must be longer than 0"),
        (["add", "a@x.test", "--scope", "a@b.test"], "is not a domain"),
        (["list", "--source", "spam"], "invalid choice"),
    ],
)
def test_bad_commands_end_with_status_2(capsys, config, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["suppression", *args, "--config", str(config)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_spool_is_status_2_for_reading(capsys, tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(f"broker:\n  url: embedded\n  spool_dir: {tmp_path / 'nowhere'}\n")
    code, out, err = run(capsys, path, "check", "a@x.test")
    assert (code, out) == (2, "")
    assert "no spool at" in err
