"""Per-destination limits: which destination a job is, its share, old keys, backoff."""

from __future__ import annotations

import pytest

from mailyard.config import ConfigError, ShapingConfig, ShapingLimits, load_settings
from mailyard.delivery.backoff import (
    Action,
    Backoff,
    BackoffPolicy,
    ThrottlingRules,
    ThrottlingRulesError,
)
from mailyard.delivery.shaping import Limits, ShapingTable, share, shipped_destinations
from mailyard.reply import Reply


def table(**destinations: dict[str, object]) -> ShapingTable:
    config = ShapingConfig.model_validate(
        {"default": {"max_connections": 20}, "destinations": destinations}
    )
    return ShapingTable(config, shipped={"*.google.com": ShapingLimits(max_connections=12)})


def test_a_domain_of_its_own_wins_over_the_site_of_its_mx_hosts():
    shaping = ShapingTable(
        ShapingConfig.model_validate(
            {"destinations": {"gmail.com": {"max_connections": 10, "max_messages_per_second": 50}}}
        ),
        shipped={"*.google.com": ShapingLimits(max_connections=12)},
    )
    own = shaping.destination("gmail.com", ["gmail-smtp-in.l.google.com"])
    assert own.key == "gmail.com"
    assert own.limits == Limits(10, 50.0, 100)
    hosted = shaping.destination("example.org", ["aspmx.l.google.com."])
    assert hosted.key == "*.google.com"
    assert hosted.limits.max_connections == 12
    other = shaping.destination("example.net", ["mx.example.net"])
    assert (other.key, other.limits) == ("example.net", Limits(20, None, 100))


def test_every_domain_on_one_site_shares_one_key():
    shaping = table(**{"*.protection.outlook.com": {"max_connections": 8}})
    keys = {
        shaping.destination(domain, [f"{domain.replace('.', '-')}.mail.protection.outlook.com"]).key
        for domain in ("a.example", "b.example", "c.example")
    }
    assert keys == {"*.protection.outlook.com"}


def test_the_first_mx_host_a_pattern_matches_decides():
    shaping = table(**{"*.backup.example": {"max_connections": 2}})
    got = shaping.destination("d.example", ["mx.d.example", "mx1.backup.example"])
    assert got.key == "*.backup.example"


def test_a_users_entry_is_merged_over_the_shipped_one_key_by_key():
    shaping = ShapingTable(
        ShapingConfig.model_validate(
            {"destinations": {"*.google.com": {"max_messages_per_second": 5}}}
        ),
        shipped={"*.google.com": ShapingLimits(max_connections=12)},
    )
    assert shaping.destinations["*.google.com"] == Limits(12, 5.0, 100)


def test_null_lifts_a_limit_and_a_left_out_key_comes_from_the_default():
    shaping = table(**{"big.example": {"max_connections": None}})
    assert shaping.destinations["big.example"] == Limits(None, None, 100)
    assert shaping.destinations["big.example"].unlimited


def test_the_shipped_entries_load_and_name_the_large_providers():
    shipped = shipped_destinations()
    assert {"*.google.com", "*.protection.outlook.com", "*.yahoodns.net"} <= set(shipped)
    assert all(limits.max_connections for limits in shipped.values())


def test_only_domains_that_may_be_on_a_site_need_their_mx_hosts():
    shaping = table(**{"own.example": {"max_connections": 3}})
    assert not shaping.needs_mx("own.example")
    assert shaping.needs_mx("other.example")
    no_sites = ShapingTable(ShapingConfig(), shipped={})
    assert not no_sites.needs_mx("other.example")


@pytest.mark.parametrize("key", ["*", "*.", "a..b", "bad key", "*.exa mple.com"])
def test_a_bad_destination_key_names_itself(key):
    with pytest.raises(ValueError, match=r"site pattern|valid domain"):
        ShapingConfig.model_validate({"destinations": {key: {"max_connections": 1}}})


@pytest.mark.parametrize(
    ("limit", "members", "shares"),
    [(10, 1, [10]), (10, 3, [4, 3, 3]), (5, 3, [2, 2, 1]), (2, 3, [1, 1, 0]), (20, 5, [4] * 5)],
)
def test_connection_shares_add_up_to_the_limit_exactly(limit, members, shares):
    limits = Limits(limit, None, 100)
    got = [share(limits, factor=1.0, members=members, rank=r).connections for r in range(members)]
    assert got == shares
    assert sum(got) == limit


def test_the_rate_is_split_evenly_and_backoff_scales_both():
    limits = Limits(10, 30.0, 100)
    assert share(limits, factor=1.0, members=3, rank=2).messages_per_second == pytest.approx(10.0)
    halved = [share(limits, factor=0.5, members=2, rank=r) for r in range(2)]
    assert [s.connections for s in halved] == [3, 2]  # 5 in all
    assert sum(s.messages_per_second or 0 for s in halved) == pytest.approx(15.0)
    # Never below one connection for the cluster.
    assert share(limits, factor=1 / 64, members=1, rank=0).connections == 1


def test_an_unlimited_destination_has_no_share_to_count():
    got = share(Limits(None, None, 100), factor=0.25, members=4, rank=3)
    assert (got.connections, got.messages_per_second) == (None, None)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_connections_per_destination", "delivery.shaping.default.max_connections"),
        ("max_messages_per_connection", "delivery.shaping.default.max_messages_per_connection"),
    ],
)
def test_an_old_key_stops_start_up_naming_its_new_place(tmp_path, old, new):
    config = tmp_path / "mailyard.yaml"
    config.write_text(f"delivery:\n  {old}: 5\n")
    with pytest.raises(ConfigError, match=rf"delivery\.{old} has moved to {new}"):
        load_settings(config)


def test_an_old_key_from_the_environment_stops_start_up_too(monkeypatch):
    monkeypatch.setenv("MAILYARD_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION", "5")
    with pytest.raises(ConfigError, match=r"shaping\.default\.max_connections"):
        load_settings(None)


# --- throttling rules and backoff --------------------------------------------


@pytest.mark.parametrize(
    ("reply", "action"),
    [
        (Reply(421, "4.7.0", "Try again later, closing connection"), Action.THROTTLE),
        (Reply(421, "", "Too many concurrent SMTP connections"), Action.THROTTLE),
        (Reply(451, "4.7.28", "unusual rate of unsolicited mail"), Action.THROTTLE),
        (Reply(450, "4.2.1", "receiving mail at a rate that prevents additional messages"),
         Action.THROTTLE),
        (Reply(421, "4.7.0", "[TSS04] Messages from 1.2.3.4 temporarily deferred"), Action.PAUSE),
        (Reply(451, "4.7.26", "unauthenticated email is not accepted"), Action.NONE),
        (Reply(451, "4.7.1", "Greylisted, try again later"), Action.NONE),
        (Reply(451, "4.3.0", "mailbox temporarily unavailable"), Action.NONE),
        (Reply(550, "5.7.1", "rate limited"), Action.NONE),  # a refusal is not a throttle
        (Reply(250, "2.0.0", "ok"), Action.NONE),
    ],
)  # fmt: skip
def test_the_default_rules_know_what_asks_us_to_slow_down(reply, action):
    assert ThrottlingRules().action(reply) is action


def test_a_users_rule_comes_before_the_defaults(tmp_path):
    rules = tmp_path / "throttling.yaml"
    rules.write_text("rules:\n  - {action: none, code: 421, text: maintenance}\n")
    got = ThrottlingRules([rules])
    assert got.action(Reply(421, "4.3.2", "down for maintenance")) is Action.NONE
    assert got.action(Reply(421, "4.3.2", "busy")) is Action.THROTTLE


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("rules:\n  - {action: slow, code: 421}\n", r"rule 1: action 'slow' is not one of"),
        ("rules:\n  - {action: throttle}\n", r"rule 1: a rule needs code, status or text"),
        ("rules:\n  - {action: throttle, code: 42}\n", r"rule 1: code '42' is not like"),
        (
            "rules:\n  - {action: throttle, when: 1, code: 421}\n",
            r"rule 1: unknown keys \['when'\]",
        ),
        ("nothing: here\n", "expected a mapping with a 'rules' list"),
    ],
)
def test_a_bad_rules_file_names_the_key_the_file_and_the_rule(tmp_path, text, error):
    rules = tmp_path / "mine.yaml"
    rules.write_text(text)
    with pytest.raises(ThrottlingRulesError, match=r"^shaping\[0\]: .*mine\.yaml: " + error):
        ThrottlingRules([rules], key="shaping")


POLICY = BackoffPolicy(recovery_interval=30, pause_after=3, pause=300)


def test_a_throttle_halves_and_a_burst_of_them_counts_once():
    backoff = Backoff(POLICY)
    backoff.throttled(100.0, Action.THROTTLE)
    assert backoff.factor(100.0) == 0.5
    backoff.delivered(100.5)  # deliveries between keep it from pausing
    backoff.throttled(101.0, Action.THROTTLE)  # the same burst: sessions open at once
    assert backoff.factor(101.0) == 0.5
    backoff.throttled(108.0, Action.THROTTLE)  # a quarter interval later: a new signal
    assert backoff.factor(108.0) == 0.25


def test_the_factor_recovers_step_by_step():
    backoff = Backoff(POLICY)
    backoff.throttled(0.0, Action.THROTTLE)
    backoff.throttled(10.0, Action.THROTTLE)
    assert backoff.factor(10.0) == 0.25
    assert backoff.factor(39.9) == 0.25
    assert backoff.factor(40.0) == 0.5
    assert backoff.factor(70.0) == 1.0
    assert backoff.factor(1000.0) == 1.0


def test_a_run_of_throttles_without_a_delivery_pauses():
    backoff = Backoff(POLICY)
    for moment in (0.0, 1.0, 2.0, 10.0, 20.0):  # three signals: 0, 10 and 20 s
        assert not backoff.paused(moment)
        backoff.throttled(moment, Action.THROTTLE)
    assert backoff.paused(20.0)
    assert backoff.paused(319.9)
    assert not backoff.paused(320.0)


def test_a_delivery_breaks_the_run():
    backoff = Backoff(POLICY)
    for moment in (0.0, 10.0):
        backoff.throttled(moment, Action.THROTTLE)
    backoff.delivered(15.0)
    backoff.throttled(20.0, Action.THROTTLE)
    assert not backoff.paused(20.0)


def test_a_pause_rule_pauses_at_once():
    backoff = Backoff(POLICY)
    backoff.throttled(5.0, Action.PAUSE)
    assert backoff.paused(5.0)
    assert not backoff.calm
