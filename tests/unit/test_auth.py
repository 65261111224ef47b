"""AUTH building blocks: password hashes, the users file, lock-out of guessing addresses."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import pytest

from mailyard.filewatch import FileProblem
from mailyard.ingress import auth
from mailyard.ingress.auth import (
    KEY,
    AuthFailures,
    User,
    Users,
    hash_password,
    is_password_hash,
    load_users,
    verify_password,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def cheap_hash(
    password: str, *, ln: int = 4, r: int = 2, p: int = 1, salt: bytes = b"s" * 16
) -> str:
    """A hash made here, straight from the format's definition, at a cost tests can afford."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**ln, r=r, p=p, dklen=32)
    return f"$scrypt$ln={ln},r={r},p={p}${b64(salt)}${b64(digest)}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScryptSpy:
    """Counts the scrypt runs (and their cost) behind each call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, int]] = []
        real = hashlib.scrypt

        def spy(password: bytes, **kwargs: int) -> bytes:
            self.calls.append((kwargs["n"], kwargs["r"], kwargs["p"]))
            return real(password, **kwargs)

        monkeypatch.setattr(hashlib, "scrypt", spy)


# --- hashes ------------------------------------------------------------------

HASH_SHAPE = re.compile(r"\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}")


def test_hash_round_trip():
    stored = hash_password("correct horse")
    assert HASH_SHAPE.fullmatch(stored)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("Correct horse", stored)
    assert not verify_password("", stored)


def test_every_hash_has_its_own_salt():
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert first.split("$")[3] != second.split("$")[3]


def test_hash_is_the_documented_scrypt():
    """Another implementation can check our hashes: the string says all there is."""
    _, scheme, params, salt, digest = hash_password("pässword").split("$")
    assert (scheme, params) == ("scrypt", "ln=14,r=8,p=1")
    salt_bytes = base64.b64decode(salt + "==")
    expected = hashlib.scrypt(
        "pässword".encode(), salt=salt_bytes, n=2**14, r=8, p=1, maxmem=64 * 2**20, dklen=32
    )
    assert b64(expected) == digest


def test_empty_password_is_not_hashed():
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


@pytest.mark.parametrize(("ln", "r", "p"), [(4, 2, 1), (5, 1, 3), (6, 8, 1)])
def test_parameters_are_read_from_the_string(ln, r, p):
    stored = cheap_hash("pw", ln=ln, r=r, p=p)
    assert verify_password("pw", stored)
    assert not verify_password("pw", stored.replace(f"ln={ln}", f"ln={ln + 1}"))
    assert not verify_password("pw", stored.replace(f"p={p}", f"p={p + 1}"))


def test_stronger_parameters_than_the_default_verify(monkeypatch):
    """Raising the cost later must not need code changes (the memory cap follows r and N)."""
    stored = cheap_hash("pw", ln=10, r=32, p=1)  # 4 MiB with r=32: beyond r=8 defaults
    assert verify_password("pw", stored)


GOOD = cheap_hash("pw")
_, _, GOOD_PARAMS, GOOD_SALT, GOOD_DIGEST = GOOD.split("$")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "pw",  # the password itself, in plain text
        "{PLAIN}pw",
        "{SHA}" + b64(hashlib.sha1(b"pw").digest()),
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA",
        f"$SCRYPT${GOOD_PARAMS}${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT}",  # digest missing
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT}${GOOD_DIGEST}$",
        f" {GOOD}",
        f"{GOOD}\n",
        f"$scrypt$ln=4,r=2${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$r=2,ln=4,p=1${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$ln=+4,r=2,p=1${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$ln=\u0664,r=2,p=1${GOOD_SALT}${GOOD_DIGEST}",  # an Arabic-Indic 4
        f"$scrypt$ln=0,r=2,p=1${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$ln=4,r=0,p=1${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$ln=4,r=2,p=0${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt$ln=40,r=2,p=1${GOOD_SALT}${GOOD_DIGEST}",  # would want terabytes
        f"$scrypt$ln=20,r=32,p=1${GOOD_SALT}${GOOD_DIGEST}",  # 4 GiB: over the cap
        f"$scrypt$ln=4,r=2,p=999${GOOD_SALT}${GOOD_DIGEST}",
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT[:-1]}!${GOOD_DIGEST}",  # not base64
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT}${GOOD_DIGEST[:-2]}",  # truncated
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT}${GOOD_DIGEST[:-2]}=",  # a bad final group
        f"$scrypt${GOOD_PARAMS}${b64(b'short')}${GOOD_DIGEST}",  # salt under 8 bytes
        f"$scrypt${GOOD_PARAMS}${GOOD_SALT}${b64(b'short digest')}",  # digest under 16 bytes
    ],
)
def test_malformed_or_foreign_hashes_never_verify(stored):
    assert not is_password_hash(stored)
    assert not verify_password("pw", stored)


def test_plain_text_is_never_compared():
    assert not verify_password("s3cret", "s3cret")


def test_the_good_hash_those_cases_start_from_verifies():
    """The cases above fail for the change each makes, not for a broken base."""
    assert is_password_hash(GOOD)
    assert verify_password("pw", GOOD)


def test_unencodable_password_is_false_not_an_error():
    assert not verify_password("\udcff", GOOD)


# --- the users file ----------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "users.yaml",
        f"""
app1:
  password: "{cheap_hash("one")}"
  sender_domains: [Example.COM, example.org]
  class: transactional
app2:
  password: "{cheap_hash("two")}"
newsletter@example.net:
  password: "{cheap_hash("three")}"
  class: bulk
""",
    )


def test_users_file_is_parsed(users_file):
    accounts = load_users(users_file)
    assert {name: user for name, (user, _) in accounts.items()} == {
        "app1": User("app1", frozenset({"example.com", "example.org"}), "transactional"),
        "app2": User("app2", None, None),
        "newsletter@example.net": User("newsletter@example.net", None, "bulk"),
    }


def test_a_class_the_queue_does_not_have_is_an_error_naming_the_user_and_the_key(users_file):
    with pytest.raises(FileProblem) as info:
        load_users(users_file, classes=("transactional", "newsletter"))
    assert str(info.value) == (
        f"{KEY}: user 'newsletter@example.net', class: unknown class 'bulk' "
        "(queue.classes has newsletter, transactional)"
    )
    accounts = load_users(users_file, classes=("transactional", "bulk", "newsletter"))
    assert accounts["newsletter@example.net"][0].message_class == "bulk"


def test_an_empty_mapping_is_a_file_without_users(tmp_path):
    assert load_users(write(tmp_path / "users.yaml", "{}\n")) == {}


PLAIN = "hunter2-plain-text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"alice:\n  password: {PLAIN}\n", ["user 'alice', password:", "plain text is never"]),
        ("alice:\n  password: '$scrypt$ln=4$x$y'\n", ["user 'alice', password:"]),
        (
            f"alice:\n  password: {GOOD}\n  pasword: {PLAIN}\n",
            ["user 'alice': unknown key 'pasword'"],
        ),
        ("alice:\n  sender_domains: [example.com]\n", ["user 'alice', password: Field required"]),
        (f"alice: {PLAIN}\n", ["user 'alice': must be a mapping with password"]),
        ("alice:\n", ["user 'alice': must be a mapping with password"]),
        (
            f"alice:\n  password: '{GOOD}'\n  sender_domains: [ok.example, 'bad domain']\n",
            ["user 'alice', sender_domains.1: 'bad domain' is not a valid domain name"],
        ),
        (
            f"alice:\n  password: '{GOOD}'\n  sender_domains: []\n",
            ["user 'alice', sender_domains:", "at least 1"],
        ),
        (
            f"alice:\n  password: '{GOOD}'\n  sender_domains: example.com\n",
            ["user 'alice', sender_domains:"],
        ),
        (f"alice:\n  password: '{GOOD}'\n  class: Bulk Mail\n", ["user 'alice', class:"]),
        (
            "alice:\n  password: 12345\n",
            ["user 'alice', password: Input should be a valid string"],
        ),
        (f"'bad name':\n  password: '{GOOD}'\n", ["user 'bad name': a user name is"]),
        (f"123:\n  password: '{GOOD}'\n", ["user 123:"]),
        (
            f"alice:\n  password: '{GOOD}'\nalice:\n  password: '{GOOD}'\n",
            ["not valid YAML: line 3, column 1: 'alice' is given twice"],
        ),
        (f"alice:\n  password: {PLAIN}\n  password: '{GOOD}'\n", ["'password' is given twice"]),
        (f"alice:\n  password: '{GOOD}\n", ["not valid YAML: line"]),
        (f"- alice\n- {PLAIN}\n", ["must be a mapping from user name to its settings"]),
        ("", ["is empty (write {} for a file with no users)"]),
        ("# nobody\n", ["is empty"]),
    ],
)
def test_users_file_errors_name_the_key_and_the_user(tmp_path, text, expected):
    path = write(tmp_path / "users.yaml", text)
    with pytest.raises(FileProblem) as info:
        load_users(path)
    message = str(info.value)
    assert message.startswith(f"{KEY}: ")
    for part in expected:
        assert part in message
    assert PLAIN not in message
    assert GOOD_DIGEST not in message  # nor a hash


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path / "users.yaml",
        f"alice:\n  password: {PLAIN}\nbob:\n  password: '{GOOD}'\n  sender_domains: ['x y']\n",
    )
    with pytest.raises(FileProblem) as info:
        load_users(path)
    assert "user 'alice', password:" in str(info.value)
    assert "user 'bob', sender_domains.0:" in str(info.value)


def test_yaml_errors_do_not_quote_the_line(tmp_path):
    """PyYAML's messages show the offending line; here it holds a hash."""
    path = write(tmp_path / "users.yaml", f"alice:\n  password: {GOOD} : [\n")
    with pytest.raises(FileProblem) as info:
        load_users(path)
    message = str(info.value)
    assert message.startswith(f"{KEY}: {path}: not valid YAML: line 2, column ")
    assert "mapping values are not allowed here" in message
    for piece in (GOOD_SALT, GOOD_DIGEST[:16], GOOD_DIGEST[-16:], "$scrypt$"):
        assert piece not in message  # PyYAML's snippet is cut to the text near the error


def test_missing_or_undecodable_file(tmp_path):
    with pytest.raises(FileProblem, match=rf"^{re.escape(KEY)}: cannot read .*No such file"):
        Users(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"j\xf6rg:\n  password: x\n")
    with pytest.raises(FileProblem, match=rf"^{re.escape(KEY)}: .*utf-8"):
        Users(latin1)


# --- authenticate ------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(users_file, clock) -> Users:
    return Users(users_file, clock=clock)


def test_authenticate(users):
    user = users.authenticate(b"app1", b"one")
    assert user == User("app1", frozenset({"example.com", "example.org"}), "transactional")
    assert users.authenticate(b"newsletter@example.net", b"three") is not None


@pytest.mark.parametrize(
    ("login", "password"),
    [
        (b"app1", b"two"),  # another user's password
        (b"app1", b"one "),
        (b"app1", b""),
        (b"APP1", b"one"),  # user names are exact
        (b"nobody", b"one"),
        (b"", b""),
        (b"app1\x00", b"one"),
        (b"app\xff1", b"one"),  # not UTF-8
        (b"app1", b"one\xff"),
        (b"app1", b"\xffone"),
    ],
)
def test_authentication_failures(users, login, password):
    assert users.authenticate(login, password) is None


def test_a_non_utf8_password_fails_even_when_its_hash_matches(tmp_path):
    """Only hash_password's UTF-8 can verify; a raw byte string never does."""
    salt = b"s" * 16
    digest = hashlib.scrypt(b"pw\xff", salt=salt, n=16, r=2, p=1, dklen=32)
    path = write(
        tmp_path / "users.yaml",
        f"eve:\n  password: '$scrypt$ln=4,r=2,p=1${b64(salt)}${b64(digest)}'\n",
    )
    assert Users(path, cache_ttl=0).authenticate(b"eve", b"pw\xff") is None


@pytest.mark.parametrize(
    ("login", "password"),
    [(b"nobody", b"x"), (b"app\xff", b"x"), (b"app1", b"wrong"), (b"app1", b"\xff"), (b"", b"")],
)
def test_every_failure_costs_one_scrypt_at_the_users_cost(users, monkeypatch, login, password):
    """Unknown users take as long as known ones: no user enumeration by timing."""
    spy = ScryptSpy(monkeypatch)
    assert users.authenticate(login, password) is None
    assert spy.calls == [(16, 2, 1)]  # ln=4, r=2, p=1 as in users_file


def test_unknown_users_pay_what_the_most_common_hash_costs(tmp_path, monkeypatch):
    path = write(
        tmp_path / "users.yaml",
        f"a: {{password: '{cheap_hash('a', ln=5)}'}}\n"
        f"b: {{password: '{cheap_hash('b', ln=6)}'}}\n"
        f"c: {{password: '{cheap_hash('c', ln=6)}'}}\n",
    )
    users = Users(path)
    spy = ScryptSpy(monkeypatch)
    users.authenticate(b"nobody", b"x")
    assert spy.calls == [(64, 2, 1)]


def test_verified_logins_are_cached(users, clock, monkeypatch):
    spy = ScryptSpy(monkeypatch)
    assert users.authenticate(b"app1", b"one") is not None
    assert users.authenticate(b"app1", b"one") is not None
    assert len(spy.calls) == 1
    assert users.authenticate(b"app1", b"on") is None  # the cache knows only this password
    assert users.authenticate(b"app1", b"onee") is None
    assert len(spy.calls) == 3
    clock.now += 300
    assert users.authenticate(b"app1", b"one") is not None  # expired: verified again
    assert len(spy.calls) == 4


def test_failures_are_not_cached(users, monkeypatch):
    spy = ScryptSpy(monkeypatch)
    for _ in range(3):
        assert users.authenticate(b"app1", b"wrong") is None
    assert len(spy.calls) == 3


def test_the_cache_can_be_turned_off(users_file, monkeypatch):
    users = Users(users_file, cache_ttl=0)
    spy = ScryptSpy(monkeypatch)
    users.authenticate(b"app1", b"one")
    users.authenticate(b"app1", b"one")
    assert len(spy.calls) == 2


def test_the_cache_is_bounded(users, monkeypatch):
    monkeypatch.setattr(auth._Directory, "CACHE_SIZE", 2)
    spy = ScryptSpy(monkeypatch)
    for login, password in ((b"app1", b"one"), (b"app2", b"two"), (b"app1", b"one")):
        users.authenticate(login, password)
    assert len(spy.calls) == 2
    users.authenticate(b"newsletter@example.net", b"three")  # evicts app2
    users.authenticate(b"app2", b"two")
    assert len(spy.calls) == 4


# --- reloading ---------------------------------------------------------------


def replace(path: Path, text: str) -> None:
    """As a deployment does it: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    write(new, text)
    os.replace(new, path)


def test_users_file_is_reloaded_when_replaced(users, users_file, clock):
    assert users.authenticate(b"app1", b"one") is not None  # and now cached
    replace(users_file, f"app1:\n  password: '{cheap_hash('uno')}'\n  class: bulk\n")
    assert users.authenticate(b"app1", b"one") is not None  # checked at most once a second
    clock.now += 1
    assert users.authenticate(b"app1", b"one") is None  # the cached login died with its file
    assert users.authenticate(b"app1", b"uno") == User("app1", None, "bulk")
    assert users.authenticate(b"app2", b"two") is None  # removed
    assert users.names == frozenset({"app1"})
    assert users.reloads == 1


def test_a_bad_new_version_keeps_the_last_good_one(users, users_file, clock, caplog):
    replace(users_file, f"app1:\n  password: {PLAIN}\n")
    clock.now += 1
    assert users.authenticate(b"app1", b"one") is not None
    assert users.authenticate(b"app1", PLAIN.encode()) is None
    assert users.reloads == 0
    [record] = [r for r in caplog.records if r.name == "mailyard.filewatch"]
    assert record.key == KEY
    assert "user 'app1', password:" in record.error
    assert PLAIN not in record.error


def test_a_new_version_with_a_class_the_queue_lacks_keeps_the_last_good_one(
    users_file, clock, caplog
):
    users = Users(users_file, classes=("transactional", "bulk"), clock=clock)
    replace(users_file, f"app1:\n  password: '{cheap_hash('uno')}'\n  class: promo\n")
    clock.now += 1
    assert users.authenticate(b"app1", b"one") is not None
    assert users.authenticate(b"app1", b"uno") is None
    [record] = [r for r in caplog.records if r.name == "mailyard.filewatch"]
    assert "user 'app1', class: unknown class 'promo'" in record.error


# --- sender domains ----------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "allowed"),
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("example.com.", True),
        ("example.org", True),
        ("mail.example.com", False),  # subdomains are not implied
        ("example.com.evil.test", False),
        ("notexample.com", False),
        ("com", False),
        ("", False),
        ("exämple.com", False),
    ],
)
def test_sender_domains(domain, allowed):
    user = User("app1", frozenset({"example.com", "example.org"}))
    assert user.may_send_from(domain) is allowed


@pytest.mark.parametrize("domain", ["example.com", "anything.test", ""])
def test_no_sender_domains_means_any(domain):
    assert User("app2").may_send_from(domain)


def test_user_holds_no_secret(users):
    user = users.authenticate(b"app1", b"one")
    assert "scrypt" not in repr(user)


# --- failed attempts ---------------------------------------------------------


def test_lock_out_after_limit_failures_in_the_window(clock):
    failures = AuthFailures(limit=3, window=60, clock=clock)
    assert failures.record_failure("192.0.2.1") is False
    clock.now += 10
    assert failures.record_failure("192.0.2.1") is False
    assert not failures.locked_out("192.0.2.1")
    assert failures.record_failure("192.0.2.1") is True
    assert failures.locked_out("192.0.2.1")
    assert not failures.locked_out("192.0.2.2")
    clock.now += 49.9  # the first failure is 59.9 s old
    assert failures.locked_out("192.0.2.1")
    clock.now += 0.1  # ...and now leaves the window
    assert not failures.locked_out("192.0.2.1")
    assert failures.record_failure("192.0.2.1") is True  # three within 60 s again


def test_the_window_slides(clock):
    failures = AuthFailures(limit=2, window=10, clock=clock)
    for _ in range(5):
        assert failures.record_failure("192.0.2.1") is False
        clock.now += 10
    assert not failures.locked_out("192.0.2.1")


def test_failures_older_than_the_window_are_forgotten(clock):
    failures = AuthFailures(limit=5, window=60, clock=clock)
    for n in range(3):
        failures.record_failure(f"192.0.2.{n}")
    clock.now += 30
    failures.record_failure("198.51.100.1")
    assert len(failures) == 4
    clock.now += 30
    failures.record_failure("198.51.100.2")
    assert len(failures) == 2  # the first three expired


def test_the_table_is_bounded(clock):
    failures = AuthFailures(limit=2, window=3600, max_addresses=3, clock=clock)
    for address in ("2001:db8::1", "2001:db8::2", "2001:db8::3"):
        failures.record_failure(address)
        failures.record_failure(address)
        clock.now += 1
    failures.record_failure("2001:db8::1")  # most recent again
    failures.record_failure("2001:db8::4")  # drops ::2, the oldest
    assert len(failures) == 3
    assert failures.locked_out("2001:db8::1")
    assert not failures.locked_out("2001:db8::2")
    assert failures.locked_out("2001:db8::3")


def test_memory_per_address_is_bounded(clock):
    failures = AuthFailures(limit=3, window=60, clock=clock)
    for _ in range(1000):
        failures.record_failure("192.0.2.1")
    assert len(failures._failures["192.0.2.1"]) == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("192.0.2.1", "::ffff:192.0.2.1"),
        ("::FFFF:c000:0201", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
    ],
)
def test_one_address_in_any_spelling_counts_once(clock, first, second):
    failures = AuthFailures(limit=2, window=60, clock=clock)
    failures.record_failure(first)
    assert failures.record_failure(second) is True
    assert failures.locked_out(first)
    assert failures.locked_out(second)
    assert len(failures) == 1


def test_other_peers_are_counted_as_given(clock):
    failures = AuthFailures(limit=1, window=60, clock=clock)
    assert failures.record_failure("unix-socket") is True
    assert failures.locked_out("unix-socket")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0, "window": 60},
        {"limit": 1, "window": 0},
        {"limit": 1, "window": 1, "max_addresses": 0},
    ],
)
def test_nonsense_limits_are_refused(kwargs):
    with pytest.raises(ValueError, match="at least 1"):
        AuthFailures(**kwargs)
