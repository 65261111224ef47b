"""load_settings: YAML file, environment overrides, errors that name the key."""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta

import pytest

from mailyard.config import ConfigError, load_settings, normalize_domain, parse_host_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No MAILYARD_* variable from the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("MAILYARD_"):
            monkeypatch.delenv(name)
    # Keep socket.getfqdn() (a DNS lookup) out of unit tests.
    monkeypatch.setenv("MAILYARD_HOSTNAME", "env.example")


@pytest.fixture
def write(tmp_path):
    def write(text: str):
        path = tmp_path / "mailyard.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


FULL = """\
hostname: mx.example.com
broker:
  url: amqp://user:secret@rabbit:5672/vhost
  prefix: fromfile
ingress:
  listen: [{port: 2525}, {host: 127.0.0.1, port: 587}]
  relay_networks: [10.0.0.0/8, "2001:db8::/32"]
  local_domains: [Bounces.Example.COM]
  max_message_size: 10485760
delivery:
  nameservers: ["127.0.0.1:5353", "[::1]:53"]
  port: 2526
  attempt_timeout: 20m
queue:
  retry_delays: [90s, 5m, 1h30m]
  max_lifetime: 2d
metrics:
  port: 9200
"""


def test_file_values_are_loaded_and_typed(write, monkeypatch):
    monkeypatch.delenv("MAILYARD_HOSTNAME")
    settings = load_settings(write(FULL))
    assert settings.hostname == "mx.example.com"
    assert settings.broker.url == "amqp://user:secret@rabbit:5672/vhost"
    assert settings.broker.prefix == "fromfile"
    assert [(x.host, x.port) for x in settings.ingress.listen] == [
        ("0.0.0.0", 2525),
        ("127.0.0.1", 587),
    ]
    assert settings.ingress.relay_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert settings.ingress.local_domains == ["bounces.example.com"]
    assert settings.ingress.max_message_size == 10485760
    assert settings.delivery.nameservers == ["127.0.0.1:5353", "[::1]:53"]
    assert settings.delivery.port == 2526
    assert settings.delivery.attempt_timeout == timedelta(minutes=20)
    assert settings.queue.retry_delays == [
        timedelta(seconds=90),
        timedelta(minutes=5),
        timedelta(minutes=90),
    ]
    assert settings.queue.max_lifetime == timedelta(days=2)
    assert settings.metrics.port == 9200


def test_defaults_without_a_file():
    settings = load_settings(None)
    assert settings.hostname == "env.example"
    assert settings.broker.prefix == "mailyard"
    assert settings.broker.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert [x.port for x in settings.ingress.listen] == [2525]
    assert settings.queue.retry_delays == [
        timedelta(minutes=m) for m in (5, 10, 20, 40, 60, 120, 240)
    ]
    assert settings.queue.max_lifetime == timedelta(days=5)
    assert settings.delivery.port == 25
    assert settings.delivery.nameservers == []


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_means_defaults(write, text):
    assert load_settings(write(text)).broker.prefix == "mailyard"


def test_environment_wins_over_the_file(write, monkeypatch):
    monkeypatch.setenv("MAILYARD_BROKER__PREFIX", "fromenv")
    monkeypatch.setenv("MAILYARD_HOSTNAME", "env.example")
    monkeypatch.setenv("MAILYARD_DELIVERY__PORT", "2999")
    settings = load_settings(write(FULL))
    assert settings.broker.prefix == "fromenv"
    assert settings.hostname == "env.example"
    assert settings.delivery.port == 2999
    # Keys of the same section that the environment does not set come from the file.
    assert settings.broker.url == "amqp://user:secret@rabbit:5672/vhost"
    assert settings.delivery.attempt_timeout == timedelta(minutes=20)
    assert settings.delivery.nameservers == ["127.0.0.1:5353", "[::1]:53"]


def test_environment_sets_lists_as_json(monkeypatch):
    monkeypatch.setenv("MAILYARD_QUEUE__RETRY_DELAYS", '["1m", "2m"]')
    monkeypatch.setenv("MAILYARD_INGRESS__LOCAL_DOMAINS", '["B.Example"]')
    settings = load_settings(None)
    assert settings.queue.retry_delays == [timedelta(minutes=1), timedelta(minutes=2)]
    assert settings.ingress.local_domains == ["b.example"]


def test_environment_values_are_validated_and_named(monkeypatch):
    monkeypatch.setenv("MAILYARD_INGRESS__MAX_MESSAGE_SIZE", "5")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert "ingress.max_message_size" in str(info.value)
    assert "(got '5')" in str(info.value)


def test_environment_lists_may_be_comma_separated(monkeypatch):
    monkeypatch.setenv("MAILYARD_QUEUE__RETRY_DELAYS", "5m, 10m")
    assert load_settings(None).queue.retry_delays == [timedelta(minutes=5), timedelta(minutes=10)]


def test_environment_json_that_does_not_parse_is_a_config_error(monkeypatch):
    monkeypatch.setenv("MAILYARD_INGRESS__LISTEN", '[{"port": 25')
    with pytest.raises(ConfigError, match="MAILYARD_INGRESS__LISTEN"):
        load_settings(None)


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        ("ingress:\n  max_message_size: 10\n", "ingress.max_message_size", "(got 10)"),
        ("ingress:\n  max_message_size: lots\n", "ingress.max_message_size", "(got 'lots')"),
        ("ingress:\n  listen: [{port: 0}]\n", "ingress.listen.0.port", "(got 0)"),
        ("ingress:\n  listen: [{port: 25}, {port: 70000}]\n", "ingress.listen.1.port", "70000"),
        ("ingress:\n  listen: []\n", "ingress.listen", "at least 1"),
        ("ingress:\n  bogus: 1\n", "ingress.bogus", "unknown key"),
        ("bogus: 1\n", "bogus", "unknown key"),
        ("ingress:\n  local_domains: [bad_domain]\n", "ingress.local_domains.0", "bad_domain"),
        ("ingress:\n  relay_networks: [not-a-network]\n", "ingress.relay_networks.0", ""),
        ("broker:\n  url: http://rabbit/\n", "broker.url", "amqp://"),
        ("broker:\n  prefix: 'bad prefix'\n", "broker.prefix", ""),
        ("queue:\n  retry_delays: []\n", "queue.retry_delays", "at least 1"),
        ("queue:\n  retry_delays: [5m, 0s]\n", "queue.retry_delays", "at least 1ms"),
        ("queue:\n  retry_delays: [5m, 5x]\n", "queue.retry_delays.1", "'5x'"),
        ("queue:\n  max_lifetime: -1s\n", "queue.max_lifetime", "is not a duration"),
        ("queue:\n  max_lifetime: -5\n", "queue.max_lifetime", "negative"),
        ("delivery:\n  nameservers: ['dns.example:53']\n", "delivery.nameservers", "dns.example"),
        ("delivery:\n  tls: always\n", "delivery.tls", "always"),
        ("log:\n  level: loud\n", "log.level", "loud"),
        ("queue:\n  classes: {bulk: 1}\n", "queue.classes", "must have 'transactional'"),
        (
            "queue:\n  classes: {transactional: 0}\n",
            "queue.classes.transactional",
            "greater than or equal to 1",
        ),
        (
            "queue:\n  classes: {transactional: 1, Bad.Name: 1}\n",
            "queue.classes.Bad.Name.[key]",
            "pattern",
        ),
        (
            "queue:\n  sender_classes: {.news.example: promo}\n",
            "queue.sender_classes",
            "'.news.example': unknown class 'promo' (queue.classes has bulk, transactional)",
        ),
        (
            "queue:\n  classes: {transactional: 3, news: 1}\n  sender_classes: {a.example: bulk}\n",
            "queue.sender_classes",
            "'a.example': unknown class 'bulk' (queue.classes has news, transactional)",
        ),
        (
            "queue:\n  sender_classes: {'bad domain': bulk}\n",
            "queue.sender_classes.bad domain.[key]",
            "not a valid domain name",
        ),
    ],
)
def test_config_error_names_the_key(write, text, key, detail):
    with pytest.raises(ConfigError) as info:
        load_settings(write(text))
    message = str(info.value)
    assert message.startswith(f"invalid configuration in {write(text)}:")
    assert f"\n  {key}: " in message
    assert detail in message


def test_classes_and_sender_classes(write):
    settings = load_settings(
        write(
            "queue:\n  classes: {transactional: 20, bulk: 2, news: 1}\n"
            "  sender_classes: {Shop.Example: transactional, .News.Example: news}\n"
        )
    )
    assert settings.queue.classes == {"transactional": 20, "bulk": 2, "news": 1}
    assert settings.queue.sender_classes == {
        "shop.example": "transactional",
        ".news.example": "news",
    }
    assert load_settings(write("{}\n")).queue.classes == {"transactional": 10, "bulk": 1}


def test_classes_may_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAILYARD_QUEUE__CLASSES", '{"transactional": 5, "bulk": 1}')
    monkeypatch.setenv("MAILYARD_QUEUE__SENDER_CLASSES", '{".news.example": "bulk"}')
    settings = load_settings(None)
    assert settings.queue.classes == {"transactional": 5, "bulk": 1}
    assert settings.queue.sender_classes == {".news.example": "bulk"}


def test_every_bad_key_is_listed(write):
    text = "ingress:\n  max_message_size: 10\n  bogus: 1\nmetrics:\n  port: 0\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(text))
    lines = str(info.value).splitlines()[1:]
    assert sorted(line.split(":")[0].strip() for line in lines) == [
        "ingress.bogus",
        "ingress.max_message_size",
        "metrics.port",
    ]


def test_out_of_range_duration_is_a_config_error(write):
    with pytest.raises(ConfigError, match=r"queue\.max_lifetime"):
        load_settings(write("queue:\n  max_lifetime: 9999999999d\n"))


@pytest.mark.parametrize("timeout", ["25m", "30m", "1h"])
def test_attempt_timeout_of_25m_or_more_is_refused(write, timeout):
    with pytest.raises(ConfigError) as info:
        load_settings(write(f"delivery:\n  attempt_timeout: {timeout}\n"))
    assert "\n  delivery: attempt_timeout (with shaping.max_wait" in str(info.value)


def test_attempt_timeout_just_under_25m_is_accepted(write):
    # 24m29s, and shaping.max_wait's 30s.
    settings = load_settings(write("delivery:\n  attempt_timeout: 24m29s\n"))
    assert settings.delivery.attempt_timeout == timedelta(minutes=24, seconds=29)


def test_tls_reporting_is_off_by_default_and_daily():
    tlsrpt = load_settings(None).delivery.tlsrpt
    assert not tlsrpt.enabled
    assert tlsrpt.interval == timedelta(days=1)


def test_tls_reporting_names_its_sender(write):
    settings = load_settings(
        write(
            "delivery:\n  tlsrpt:\n    enabled: true\n    interval: 6h\n"
            "    organization: Example Inc.\n    contact: TLS-Reports@Example.COM\n"
        )
    )
    tlsrpt = settings.delivery.tlsrpt
    assert tlsrpt.interval == timedelta(hours=6)
    assert tlsrpt.organization == "Example Inc."
    assert tlsrpt.contact == "TLS-Reports@example.com"  # the domain lower-cased


@pytest.mark.parametrize(
    ("section", "detail"),
    [
        ("{enabled: true}", "enabled needs organization and contact"),
        ("{enabled: true, organization: Example}", "enabled needs contact"),
        ("{enabled: true, contact: tlsrpt@example.com}", "enabled needs organization"),
        ("{contact: not-an-address}", "'not-an-address' is not an address"),
        ("{contact: 'a@bad_domain'}", "bad_domain"),
        ("{interval: 500ms}", "at least 1s"),
        ("{max_domains: 0}", "greater than or equal to 1"),
    ],
)
def test_tls_reporting_refuses_what_it_cannot_send_naming_the_key(write, section, detail):
    with pytest.raises(ConfigError) as info:
        load_settings(write(f"delivery:\n  tlsrpt: {section}\n"))
    message = str(info.value)
    assert "\n  delivery.tlsrpt" in message
    assert detail in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"cannot read config file {path}: No such file or directory"


def test_invalid_yaml(write):
    path = write("ingress:\n  listen: [{port: 25}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"config file {path} is not valid YAML: ")
    assert "line 3" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(write, text):
    path = write(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"config file {path} must hold a mapping of keys at the top"


def test_settings_are_frozen(write):
    settings = load_settings(write("broker:\n  prefix: p\n"))
    with pytest.raises(ValueError, match="frozen"):
        settings.broker.prefix = "other"


# --- parse_host_port -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("[2001:db8::1]:5300", ("2001:db8::1", 5300)),
        ("10.0.0.1", ("10.0.0.1", 53)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        (" 10.0.0.1:54 ", ("10.0.0.1", 54)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_parse_host_port(value, expected):
    assert parse_host_port(value, default_port=53) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("dns.example", "is not an IP address"),
        ("dns.example:53", "is not an IP address"),
        ("", "is not an IP address"),
        ("300.0.0.1:53", "is not an IP address"),
        ("[::1]:x", "bad port"),
        ("127.0.0.1:abc", "bad port"),
        ("127.0.0.1:-1", "bad port"),
        ("127.0.0.1:0", "bad port"),
        ("127.0.0.1:65536", "bad port"),
        ("[dns.example]:53", "is not an IP address"),
    ],
)
def test_parse_host_port_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_host_port(value, default_port=53)


@pytest.mark.parametrize("value", ["[::1]53", "[::1]5353", "127.0.0.1:", "[::1]:"])
def test_parse_host_port_rejects_malformed_port_part(value):
    with pytest.raises(ValueError, match="bad port"):
        parse_host_port(value, default_port=53)


# --- normalize_domain --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Example.COM", "example.com"), ("localhost", "localhost"), ("a-b.c1.test", "a-b.c1.test")],
)
def test_normalize_domain(value, expected):
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "example.com.",
        ".example.com",
        "a..b",
        "-a.test",
        "a-.test",
        "a_b.test",
        "a b.test",
        "b\u00fccher.test",
        "a" * 64 + ".test",
        ".".join(["a" * 63] * 4) + ".test",
    ],
)
def test_normalize_domain_rejects(value):
    with pytest.raises(ValueError, match="is not a valid domain name"):
        normalize_domain(value)


def test_return_path_domain_is_one_of_the_local_domains(write, tmp_path):
    text = (
        "ingress:\n  local_domains: [Bounces.Example.COM]\n"
        f"bounce:\n  return_path_domain: BOUNCES.example.com\n"
        f"  verp_secret_file: {tmp_path / 'secret'}\n"
    )
    settings = load_settings(write(text))
    assert settings.bounce.return_path_domain == "bounces.example.com"
    assert settings.bounce.verp_secret_file == tmp_path / "secret"


def test_a_return_path_domain_that_is_not_local_is_refused_naming_both_keys(write):
    text = (
        "ingress:\n  local_domains: [bounces.example.com]\n"
        "bounce:\n  return_path_domain: mail.example.com\n  verp_secret_file: /s\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(write(text))
    message = str(info.value)
    assert "bounce.return_path_domain mail.example.com must be one of ingress.local_domains" in (
        message
    )
    assert "(bounces.example.com)" in message


def test_a_return_path_domain_needs_a_secret(write):
    text = "ingress:\n  local_domains: [b.example]\nbounce:\n  return_path_domain: b.example\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(text))
    assert "\n  bounce: return_path_domain needs bounce.verp_secret_file" in str(info.value)
