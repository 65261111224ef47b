"""Destinations delivery must not connect to: prohibited networks, and itself."""

from __future__ import annotations

import ipaddress

import pytest

from mailyard.config import DeliveryConfig
from mailyard.delivery.resolver import MailHost, RouteError
from mailyard.delivery.safety import Safety


@pytest.fixture
def safety() -> Safety:
    return Safety.build(DeliveryConfig().prohibited_networks, "mx.example.com")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
        "169.254.169.254", "::1", "::", "fd00::1", "fe80::1", "::ffff:169.254.169.254",
        "not an address",
    ],
)  # fmt: skip
def test_the_default_list_keeps_delivery_off_private_and_local_networks(safety, address):
    assert not safety.allows(address)


@pytest.mark.parametrize("address", ["192.0.2.10", "8.8.8.8", "2001:db8::25", "172.32.0.1"])
def test_public_addresses_are_allowed(safety, address):
    assert safety.allows(address)


def test_unsafe_addresses_are_dropped_and_safe_hosts_kept(safety):
    hosts = [
        MailHost("mx1.example.net", ("10.0.0.5", "192.0.2.1")),
        MailHost("mx2.example.net", ("169.254.169.254",)),
        MailHost("mx3.example.net", ("198.51.100.7",), 2525),
    ]
    assert safety.filter("example.net", hosts) == [
        MailHost("mx1.example.net", ("192.0.2.1",)),
        MailHost("mx3.example.net", ("198.51.100.7",), 2525),
    ]


def test_a_destination_with_only_unsafe_hosts_is_5_4_4(safety):
    with pytest.raises(RouteError) as failure:
        safety.filter("evil.example", [MailHost("mx.evil.example", ("169.254.169.254",))])
    assert (failure.value.reply.code, failure.value.reply.status) == (550, "5.4.4")
    assert failure.value.kind == "prohibited"


def test_an_mx_that_is_ourselves_is_a_loop(safety):
    with pytest.raises(RouteError) as failure:
        safety.filter("loop.example", [MailHost("MX.Example.COM.", ("192.0.2.1",))])
    assert (failure.value.reply.code, failure.value.reply.status) == (554, "5.4.6")


def test_the_list_is_the_users_when_set():
    mine = Safety.build([ipaddress.ip_network("203.0.113.0/24")], "mx.example.com")
    assert mine.allows("127.0.0.1")
    assert not mine.allows("203.0.113.9")
