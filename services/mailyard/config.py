"""Configuration: one YAML file, every key overridable from the environment.

``MAILYARD_BROKER__URL=amqp://…`` overrides ``broker.url`` (prefix ``MAILYARD_``,
``__`` between levels), so the same settings come from a ConfigMap (the file)
and Secrets (the environment) in Kubernetes. Everything is validated at
start-up; a bad value stops the process with a message naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Collection, Iterable
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from mailyard.durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]

_HOSTNAME_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalize_domain(value: str) -> str:
    """Lower-case a domain name and check that it is a plain DNS name."""
    domain = value.strip().lower()
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 1 or not all(map(_HOSTNAME_LABEL.fullmatch, labels)):
        raise ValueError(f"{value!r} is not a valid domain name")
    return domain


DomainName = Annotated[str, BeforeValidator(lambda v: normalize_domain(str(v)))]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(Section):
    # amqp:// or amqps:// for RabbitMQ; "embedded" for a local spool in
    # spool_dir (SQLite), which only `mailyard all` can use: one process owns it.
    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    spool_dir: Path = Path("var/spool")
    prefix: str = Field("mailyard", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
    # A message delivered this many times without an ack (crashes, handler
    # errors) is dead-lettered to the parking queue by the broker itself.
    delivery_limit: int = Field(20, ge=2, le=1000)
    # How long a publish may wait for the broker's confirm before it counts
    # as failed (ingress then answers 451).
    publish_timeout: Duration = timedelta(seconds=15)
    reconnect_interval: Duration = timedelta(seconds=2)
    # delivered/deferred events with no queue bound to them are not sent for
    # this long, then tried again (see mailyard/events.py).
    unrouted_event_recheck: Duration = timedelta(seconds=30)

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, url: str) -> str:
        if url != "embedded" and not url.startswith(("amqp://", "amqps://")):
            raise ValueError("must be 'embedded' or start with amqp:// or amqps://")
        return url


class Listener(Section):
    """One SMTP listener and what it is for.

    - ``mx``: mail from the internet (port 25). STARTTLS is offered when
      ``ingress.tls`` is set, AUTH only after it; clients in
      ``relay_networks`` and authenticated users may relay, everyone else
      reaches only ``local_domains``.
    - ``submission``: applications (port 587, RFC 6409). STARTTLS offered;
      every transaction needs AUTH, which needs TLS first.
    - ``submissions``: the same over implicit TLS (port 465, RFC 8314).
    """

    host: str = "0.0.0.0"
    port: Port
    role: Literal["mx", "submission", "submissions"] = "mx"


class TlsFiles(Section):
    """A certificate (PEM, chain included) and its key; re-read when either changes."""

    cert_file: Path
    key_file: Path


class AuthConfig(Section):
    # user: {password: <`mailyard auth hash` output>, sender_domains: [...]};
    # re-read when it changes.
    users_file: Path


class IngressLimits(Section):
    """Per-client limits and the caps that keep one session from hurting the others."""

    # Postfix's smtpd_client_connection_count_limit.
    connections_per_client: int = Field(50, ge=1)
    # New connections per client address per minute; 0 is no limit.
    connection_rate_per_client: int = Field(0, ge=0)
    # NOOP, RSET, VRFY, HELP and unknown commands per session
    # (Postfix's smtpd_junk_command_limit).
    junk_commands: int = Field(100, ge=1)
    # Bytes per second a DATA or BDAT upload must keep up (Postfix's
    # smtpd_min_data_rate); 0 is no minimum.
    min_data_rate: int = Field(500, ge=0)
    tls_handshake_timeout: Duration = timedelta(seconds=30)
    # Failed AUTH attempts from one address within the window before it is
    # turned away until the window has passed.
    auth_failures: int = Field(10, ge=1)
    auth_failure_window: Duration = timedelta(minutes=5)
    # What all sessions' DATA and BDAT may hold in memory together; past it a
    # new transaction's DATA gets 452 4.3.1.
    data_memory: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    # The header section of a message (Postfix's header_size_limit).
    header_size: int = Field(102_400, ge=1024)
    # NUL in a message: refuse it (554 5.6.0), or strip it (Postfix's
    # message_strip_characters).
    nul_in_content: Literal["refuse", "strip"] = "refuse"
    # Wait this long before the greeting on mx listeners; a client that
    # talks first is turned away (as Postfix's postscreen does). 0 is off.
    greeting_delay: Duration = timedelta(seconds=1)


class ProxyProtocolConfig(Section):
    """HAProxy PROXY protocol (v1/v2) from a load balancer in front of ingress.

    When enabled, every connection must start with a PROXY header, and only
    peers in ``trusted_networks`` may send one: the address it carries is
    then the client for relay control and the Received: header.
    """

    enabled: bool = False
    trusted_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [
            ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
        ]
    )
    timeout: Duration = timedelta(seconds=5)


class GroupCommitConfig(Section):
    """Group commit at ingress: messages that finish DATA while earlier ones
    are still being stored go to the broker together, in one publish and one
    confirm. A message alone is published at once, so a quiet server adds no
    delay; a busy one pays the broker per batch, not per message. Every
    client still gets its 250 only after its message is confirmed.
    ``max_messages: 1`` publishes every message on its own.
    """

    max_messages: int = Field(50, ge=1)
    max_bytes: int = Field(1_048_576, ge=1024)
    # Publishes awaiting their confirm at once; more pending messages wait
    # for one to finish and then go out together.
    max_in_flight: int = Field(4, ge=1)


class IngressConfig(Section):
    listen: list[Listener] = Field(default_factory=lambda: [Listener(port=2525)], min_length=1)
    # Clients in these networks may send to any domain; all others only to
    # local_domains.
    relay_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
    )
    # Domains we are the final destination for (where bounces come back).
    local_domains: list[DomainName] = Field(default_factory=list)
    max_message_size: int = Field(26_214_400, ge=1024)
    max_recipients: int = Field(1000, ge=1)
    max_connections: int = Field(1000, ge=1)
    # A message that already carries more Received: headers is looping.
    max_hops: int = Field(50, ge=1)
    idle_timeout: Duration = timedelta(minutes=5)
    proxy_protocol: ProxyProtocolConfig = ProxyProtocolConfig()
    group_commit: GroupCommitConfig = GroupCommitConfig()
    tls: TlsFiles | None = None
    auth: AuthConfig | None = None
    limits: IngressLimits = IngressLimits()
    # Where postmaster@ and abuse@ of every local domain go (RFC 5321 §4.5.1,
    # RFC 2142); unset, they reach the bounce service like other local mail.
    postmaster: str | None = None

    @model_validator(mode="after")
    def _roles_have_what_they_need(self) -> IngressConfig:
        roles = {listener.role for listener in self.listen}
        if roles & {"submission", "submissions"} and self.auth is None:
            raise ValueError(
                "listen: a submission or submissions listener needs ingress.auth.users_file "
                "(every transaction there needs AUTH)"
            )
        if roles & {"submission", "submissions"} and self.tls is None:
            raise ValueError(
                "listen: a submission or submissions listener needs ingress.tls "
                "(AUTH is offered only over TLS)"
            )
        return self


class DeliveryBatchConfig(Section):
    """Jobs for one destination handed to delivery together, as Postfix's qmgr
    hands an smtp process a list: the broker and the consumers then work per
    batch, and the jobs share the SMTP session. Only jobs split from messages
    accepted together are batched, so nothing waits to fill a batch. A
    delivery process killed mid-batch gets the batch back; the jobs it had
    finished are in the record of finished jobs and are left out, so only the
    transactions in flight are sent again (counted in
    ``mailyard_delivery_possible_duplicates_total``). ``max_jobs: 1`` sends
    every job on its own.
    """

    max_jobs: int = Field(50, ge=1)
    max_bytes: int = Field(1_048_576, ge=1024)


class FeedbackIdConfig(Section):
    """Gmail's feedback loop header, ``Feedback-ID: campaign:customer:type:sender``.

    Added by the queue before DKIM signing to mail that came in over SMTP and
    has none. ``sender_id`` is the same for all your mail; the other fields
    are read from the headers named here (empty when a header is absent or
    not configured); the customer is the submission login when no header
    names one. Only letters, digits, ``.``, ``_`` and ``-`` are kept.
    """

    sender_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    campaign_header: str = ""
    customer_header: str = ""
    mail_type_header: str = ""


# A message class (``queue.classes``): also a queue name's last part
# (``<prefix>.delivery.<class>``), so no dots.
CLASS_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TRANSACTIONAL = "transactional"
ClassName = Annotated[str, Field(pattern=CLASS_NAME_PATTERN)]
DEFAULT_CLASSES = {TRANSACTIONAL: 10, "bulk": 1}


def _sender_domain_key(value: str) -> str:
    """A sender_classes key: a domain, or ``.domain`` for every subdomain below it."""
    return _policy_domain(value)


def unknown_classes(key: str, named: Iterable[str], classes: Collection[str]) -> list[str]:
    """A problem per class in ``named`` that ``queue.classes`` does not have, naming ``key``.

    For every key that names classes (``queue.sender_classes``, the users
    file's ``class``, egress addresses' ``classes``): one message each.
    """
    known = ", ".join(sorted(classes))
    return [
        f"{key}: unknown class {name!r} (queue.classes has {known})"
        for name in dict.fromkeys(named)
        if name not in classes
    ]


class QueueConfig(Section):
    retry_delays: list[Duration] = Field(
        default_factory=lambda: [
            parse_duration(d) for d in ("5m", "10m", "20m", "40m", "1h", "2h", "4h")
        ],
        min_length=1,
    )
    max_lifetime: Duration = timedelta(days=5)
    # Postfix's delay_warning_time: a message still waiting this long after
    # it was accepted gets the sender one "delayed" DSN (RFC 3464 §2.3.3) for
    # the recipients whose NOTIFY allows it (the default does). Checked when
    # an attempt is deferred, so it comes up to one retry delay late. Off
    # when unset.
    delay_warning: Duration | None = None
    # Postfix's smtp_destination_recipient_limit: recipients per SMTP
    # transaction, hence per delivery job.
    max_recipients_per_job: int = Field(50, ge=1)
    prefetch: int = Field(64, ge=1)
    delivery_batch: DeliveryBatchConfig = DeliveryBatchConfig()
    # Off (null) by default; see FeedbackIdConfig.
    feedback_id: FeedbackIdConfig | None = None
    # Message classes and their weights: each class has a delivery lane of
    # its own (<prefix>.delivery for transactional, <prefix>.delivery.<class>
    # for the others), and when jobs of several classes wait for a delivery
    # slot, slots go by weight (10:1 is about ten transactional jobs for one
    # bulk job; a class with nothing waiting leaves its share to the others).
    classes: dict[ClassName, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: dict(DEFAULT_CLASSES)
    )
    # Envelope sender domain -> class, for mail whose AUTH user names none.
    # A key is that domain only; ".example.com" is every subdomain below
    # example.com (Postfix's habit, as in delivery.tls_policies). The longest
    # match wins.
    sender_classes: dict[Annotated[str, BeforeValidator(_sender_domain_key)], ClassName] = Field(
        default_factory=dict
    )

    @field_validator("retry_delays")
    @classmethod
    def _positive_delays(cls, delays: list[timedelta]) -> list[timedelta]:
        for delay in delays:
            if delay.total_seconds() < 0.001:
                raise ValueError("every retry delay must be at least 1ms")
        return delays

    @field_validator("delay_warning")
    @classmethod
    def _positive_warning(cls, delay: timedelta | None) -> timedelta | None:
        if delay is not None and delay.total_seconds() <= 0:
            raise ValueError("must be a positive duration (leave it out to send no warnings)")
        return delay

    @field_validator("classes")
    @classmethod
    def _has_transactional(cls, classes: dict[str, int]) -> dict[str, int]:
        if TRANSACTIONAL not in classes:
            raise ValueError(
                f"must have {TRANSACTIONAL!r} (the default class, and the class of "
                "Mailyard's own DSNs and reports), e.g. {transactional: 10, bulk: 1}"
            )
        return classes

    @field_validator("sender_classes")
    @classmethod
    def _sender_classes_exist(
        cls, sender_classes: dict[str, str], info: ValidationInfo
    ) -> dict[str, str]:
        classes = info.data.get("classes")
        if classes is None:
            return sender_classes  # classes is wrong itself, and reported
        problems = [
            problem
            for domain, name in sender_classes.items()
            for problem in unknown_classes(repr(domain), [name], classes)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return sender_classes


class SmarthostConfig(Section):
    """All mail (or mail for ``domains``) to one relay host, as Postfix's ``relayhost``.

    ``host`` is a name (resolved through ``delivery.nameservers``, A/AAAA, no
    MX) or an IP address. ``tls``: ``opportunistic`` uses STARTTLS when the
    relay offers it; ``verify`` requires it, with the certificate checked
    against ``host``. With ``username``, AUTH (PLAIN or LOGIN) with the
    password in ``password_file``, and only over TLS.
    """

    host: str = Field(min_length=1)
    port: Port = 25
    # Only these destination domains; empty means all mail.
    domains: list[DomainName] = Field(default_factory=list)
    tls: Literal["verify", "opportunistic"] = "opportunistic"
    username: str = ""
    password_file: Path | None = None

    @model_validator(mode="after")
    def _login_complete(self) -> SmarthostConfig:
        if bool(self.username) != (self.password_file is not None):
            raise ValueError("username and password_file go together")
        return self


TlsModeName = Literal["opportunistic", "verify", "none"]


def _policy_domain(value: str) -> str:
    """A tls_policies key: a domain, or ``.domain`` for every subdomain below it."""
    text = str(value).strip()
    if text.startswith("."):
        return "." + normalize_domain(text[1:])
    return normalize_domain(text)


class MtaStsConfig(Section):
    """RFC 8461: a domain that publishes an enforce policy gets mail only on its
    listed MX hosts, over verified TLS."""

    enabled: bool = True
    https_port: Port = 443  # where mta-sts.<domain> serves the policy (tests change it)
    fetch_timeout: Duration = timedelta(seconds=10)
    cache_size: int = Field(10_000, ge=1)  # policies (and TXT answers) kept


class DaneConfig(Section):
    """RFC 7672: an MX host whose TLSA records DNSSEC vouches for gets mail only over
    STARTTLS with a certificate one of its DANE-TA or DANE-EE records matches; else
    the host is skipped and the mail waits (``4.7.5``), never sent in clear.

    Off by default because it needs a DNSSEC-validating resolver, and
    ``delivery.nameservers`` must point at it (a local Unbound or Knot
    Resolver, say, over a network path you trust: delivery checks no
    signatures itself, it believes the resolver's AD bit). The cluster's or
    the system's usual resolver does not validate; DANE then never applies.
    Per host, DANE wins over MTA-STS; a ``tls_policies`` entry for the
    domain wins over both, and the smarthost is never DANE-checked.
    """

    enabled: bool = False


_ADDR_SPEC = re.compile(r"[^@\s<>()\[\],;:\"]{1,64}@[^@\s<>]{1,253}")


class TlsRptConfig(Section):
    """SMTP TLS Reporting (RFC 8460) as a sender: per policy domain and ``interval``,
    count the TLS sessions that succeeded and failed (by result type) and send the
    report to the ``rua`` the domain publishes in ``_smtp._tls.<domain>`` (mail
    through our own pipeline, DKIM-signed like any other; or an HTTPS POST).

    Off by default, unlike MTA-STS: reporting makes Mailyard send mail in the name
    of ``organization`` and ``contact`` and POST to URLs that remote domains pick,
    which nobody should find happening after a first install; and a report is only
    believed when a DKIM key (``dkim.keys``) covers the domain of ``contact``
    (receivers must ignore unsigned reports, §5.3), which only the operator can set
    up. So turning it on asks for both names, with no guess from ``hostname``.

    Each delivery replica reports for itself (its own report-id); the counts of
    an interval that is cut short by a shutdown are sent at once, for the part of
    the interval that passed.
    """

    enabled: bool = False
    # Intervals start at multiples of this since the epoch (1d: from 00:00 UTC, as
    # RFC 8460 §4.1 recommends); each report goes out within a tenth of it after.
    interval: Duration = timedelta(days=1)
    # The report's organization-name, e.g. "Example Inc.".
    organization: str = ""
    # The report's contact-info, the From: of its mail; its domain is the
    # TLS-Report-Submitter. Give dkim.keys a key for that domain.
    contact: str = ""
    # Timeout of one HTTPS POST of a report (and of its TCP connect).
    timeout: Duration = timedelta(seconds=30)
    # Policy domains counted per interval; sessions of further domains are dropped
    # (mailyard_delivery_tlsrpt_dropped_total{kind="policy"}).
    max_domains: int = Field(10_000, ge=1)
    # failure-details rows (result type, MX, address) kept per interval in all;
    # failures past it still count in their policy's summary.
    max_failure_details: int = Field(10_000, ge=0)

    @field_validator("interval")
    @classmethod
    def _interval(cls, interval: timedelta) -> timedelta:
        if interval < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return interval

    @field_validator("contact")
    @classmethod
    def _contact(cls, contact: str) -> str:
        contact = contact.strip()
        if contact and not _ADDR_SPEC.fullmatch(contact):
            raise ValueError(f"{contact!r} is not an address like tlsrpt@example.com")
        if contact:
            local, _, domain = contact.rpartition("@")
            contact = f"{local}@{normalize_domain(domain)}"
        return contact

    @model_validator(mode="after")
    def _names_when_enabled(self) -> TlsRptConfig:
        missing = [key for key in ("organization", "contact") if not getattr(self, key).strip()]
        if self.enabled and missing:
            raise ValueError(
                f"enabled needs {' and '.join(missing)}: the report names who sends it "
                "(organization-name) and an address to write to (contact-info, the From: "
                "of report mail), e.g. organization: Example Inc., contact: tlsrpt@example.com"
            )
        return self


MOVED_DELIVERY_KEYS = {
    "max_connections_per_destination": "shaping.default.max_connections",
    "max_messages_per_connection": "shaping.default.max_messages_per_connection",
}

_SITE_PATTERN = re.compile(r"[a-z0-9*-]+(\.[a-z0-9*-]+)*")


def _shaping_key(value: Any) -> str:
    """A recipient domain, or a site: a pattern with ``*`` on MX host names."""
    text = str(value).strip().lower().removesuffix(".")
    if "*" in text:
        if not _SITE_PATTERN.fullmatch(text) or text.strip("*.") == "":
            raise ValueError(
                f"{value!r} is not a site pattern: MX host name labels with * "
                "for any characters, e.g. *.google.com"
            )
        return text
    return normalize_domain(text)


ShapingKey = Annotated[str, BeforeValidator(_shaping_key)]


class ShapingLimits(Section):
    """One destination's limits, held by the whole cluster together.

    A key left out comes from the destination's shipped entry
    (``mailyard/rules/shaping.yaml``), then from ``shaping.default``; null
    means no limit.
    """

    max_connections: int | None = Field(None, ge=1)
    max_messages_per_second: float | None = Field(None, gt=0)
    max_messages_per_connection: int | None = Field(None, ge=1)


class ShapingDefaults(Section):
    # Sessions open to one destination by all delivery replicas together,
    # idle ones kept for reuse included (Postfix: default_destination_concurrency_limit).
    max_connections: int | None = Field(20, ge=1)
    # Messages (SMTP transactions) per second to one destination, cluster-wide.
    max_messages_per_second: float | None = Field(None, gt=0)
    max_messages_per_connection: int = Field(100, ge=1)


class BackoffConfig(Section):
    """Slowing down when a destination says it is overwhelmed (delivery/backoff.py).

    A reply that a throttling rule matches (``mailyard/rules/throttling.yaml``,
    then ``rules_files`` before it) halves the destination's connections and
    rate (replies that arrive together count once: a quarter of
    ``recovery_interval`` apart at least); every ``recovery_interval`` without
    one doubles them back, up to the limits. ``pause_after`` of those signals
    in a row, with no delivery between them, pause the destination for
    ``pause``: its jobs wait in the retry ladder.
    """

    rules_files: list[Path] = Field(default_factory=list)
    recovery_interval: Duration = timedelta(seconds=30)
    pause_after: int = Field(5, ge=1)
    pause: Duration = timedelta(minutes=5)

    @field_validator("recovery_interval", "pause")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


class ShapingConfig(Section):
    default: ShapingDefaults = Field(default_factory=ShapingDefaults)
    # Recipient domain, or site pattern on MX host names ("*.google.com"):
    # merged over the shipped entries for the large providers.
    destinations: dict[ShapingKey, ShapingLimits] = Field(default_factory=dict)
    # How long a job may wait in memory for its destination before it is put
    # back in the retry ladder (not counted as an attempt). A destination keeps
    # in memory only what it is expected to take within this time.
    max_wait: Duration = timedelta(seconds=30)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    # How often each delivery process tells the others it is alive; a
    # process silent for three of these no longer holds a share of the limits.
    heartbeat_interval: Duration = timedelta(seconds=1)

    @field_validator("max_wait", "heartbeat_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=100):
            raise ValueError("must be at least 100ms")
        return value


_CLASS_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # as the users file's ``class``


def _ehlo_name(value: object) -> str:
    """A fully-qualified host name, as RFC 5321 §4.1.1.1 wants in EHLO: the source's PTR."""
    name = normalize_domain(str(value).strip().removesuffix("."))
    if "." not in name or name.rsplit(".", 1)[1].isdigit():
        raise ValueError(
            f"{value!r} is not a fully-qualified host name (the name the address's PTR "
            "record gives, e.g. out1.example.com)"
        )
    return name


class SourceAddressConfig(Section):
    """One egress address: connections bind to ``address`` and say ``EHLO <ehlo>``.

    ``ehlo`` should be the name the address's PTR record gives, with an A or
    AAAA record back to the address (receivers check both). With neither
    ``classes`` nor ``sender_domains`` the entry serves all mail; otherwise
    the mail it names (both given: mail matching both).
    """

    address: IPvAnyAddress
    ehlo: Annotated[str, BeforeValidator(_ehlo_name)]
    # Message classes (DeliveryJob.mail_class; empty is transactional).
    classes: list[Annotated[str, Field(pattern=_CLASS_NAME)]] = Field(default_factory=list)
    # Envelope-sender (MAIL FROM) domains, matched exactly; the null sender has none.
    sender_domains: list[DomainName] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _bindable_kind(cls, address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
        if address.is_unspecified or address.is_multicast or address.is_link_local:
            raise ValueError(
                f"{address} cannot be a source address: give a unicast address of this host "
                "(not unspecified, multicast or link-local)"
            )
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            raise ValueError(
                f"{address} is an IPv4-mapped address: write {address.ipv4_mapped} itself"
            )
        return address


def _source_addresses(entries: list[SourceAddressConfig]) -> list[SourceAddressConfig]:
    seen: dict[IPv4Address | IPv6Address, int] = {}
    for index, entry in enumerate(entries):
        if entry.address in seen:
            raise ValueError(
                f"{entry.address} is listed twice (entries {seen[entry.address]} and {index})"
            )
        seen[entry.address] = index
    if entries and all(entry.classes or entry.sender_domains for entry in entries):
        raise ValueError(
            "needs at least one entry without classes and sender_domains, for the mail "
            "no other entry names (add {address: ..., ehlo: ...} on its own)"
        )
    return entries


class DeliveryConfig(Section):
    # "host" or "host:port" ("[v6]:port"); empty means the system resolver.
    # With dane.enabled: a DNSSEC-validating resolver.
    nameservers: list[str] = Field(default_factory=list)
    port: Port = 25
    # Jobs worked on at once by one delivery process.
    concurrency: int = Field(100, ge=1)
    connect_timeout: Duration = timedelta(seconds=30)
    command_timeout: Duration = timedelta(minutes=5)
    # Hard deadline for one job (DNS + every MX tried); well under RabbitMQ's
    # consumer_timeout (30 min by default), so a job is never held too long.
    attempt_timeout: Duration = timedelta(minutes=10)
    dns_timeout: Duration = timedelta(seconds=10)
    # DNS answers kept in memory, each for its TTL; 0 turns the cache off.
    dns_cache_size: int = Field(10_000, ge=0)
    # For destinations not in tls_policies. opportunistic: STARTTLS when
    # offered, no certificate check (RFC 7435, Postfix's "may"); verify:
    # STARTTLS required, certificate checked against the MX name (Postfix's
    # "secure"); none: never.
    tls: TlsModeName = "opportunistic"
    # Destination domain (".domain": every subdomain below it) -> mode.
    tls_policies: dict[Annotated[str, BeforeValidator(_policy_domain)], TlsModeName] = Field(
        default_factory=dict
    )
    # PEM CA bundle for every certificate delivery checks; read again when
    # it changes. Unset: the system's trust store.
    tls_ca_file: Path | None = None
    mta_sts: MtaStsConfig = Field(default_factory=MtaStsConfig)
    dane: DaneConfig = Field(default_factory=DaneConfig)
    tlsrpt: TlsRptConfig = Field(default_factory=TlsRptConfig)
    ipv6: bool = True
    connection_reuse: bool = True
    idle_connection_timeout: Duration = timedelta(seconds=30)
    shaping: ShapingConfig = Field(default_factory=lambda: ShapingConfig())
    smarthost: SmarthostConfig | None = None
    # Egress addresses to bind outbound SMTP to, each with its EHLO name; empty:
    # the system's choice of address, and ``hostname`` as the EHLO name.
    source_addresses: Annotated[list[SourceAddressConfig], AfterValidator(_source_addresses)] = (
        Field(default_factory=list)
    )
    # Never connected to: loopback, unspecified, link-local (cloud metadata),
    # RFC 1918, CGNAT, IPv6 ULA and link-local. Setting it replaces the
    # list: add the cluster's pod and service ranges to it.
    prohibited_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [
            ipaddress.ip_network(n)
            for n in (
                "0.0.0.0/8", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                "100.64.0.0/10", "169.254.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10",
            )
        ]
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in MOVED_DELIVERY_KEYS.items():
                if old in data:
                    raise ValueError(
                        f"delivery.{old} has moved to delivery.{new} (it is now the "
                        "default of the per-destination shaping limits); set it there"
                    )
        return data

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            parse_host_port(server, default_port=53)
        return servers

    @model_validator(mode="after")
    def _deadline_fits(self) -> DeliveryConfig:
        if self.attempt_timeout + self.shaping.max_wait >= timedelta(minutes=25):
            raise ValueError(
                "attempt_timeout (with shaping.max_wait, which a job may wait before it) "
                "must stay under 25m: RabbitMQ's consumer_timeout (30m by default) would "
                "otherwise close the channel mid-attempt"
            )
        return self


def normalize_selector(value: str) -> str:
    """Lower-case a DKIM selector and check it (RFC 6376 §3.1): DNS labels, dot-separated."""
    selector = value.strip().lower()
    labels = selector.split(".")
    if not all(map(_HOSTNAME_LABEL.fullmatch, labels)):
        raise ValueError(
            f"{value!r} is not a valid selector: a DNS label (letters, digits and "
            "inner hyphens, at most 63), or several joined by periods (RFC 6376 §3.1)"
        )
    return selector


Selector = Annotated[str, BeforeValidator(lambda v: normalize_selector(str(v)))]


class DkimKey(Section):
    """One DKIM signing key (RFC 6376; RSA per RFC 8301, Ed25519 per RFC 8463).

    Mail whose ``From:`` domain is ``domain`` or below it is signed with
    ``d=<domain>; s=<selector>``; the public half is published as a TXT record
    at ``<selector>._domainkey.<domain>`` (``mailyard dkim keygen`` prints it).
    """

    domain: DomainName
    selector: Selector
    # A PEM private key (PKCS#8 or traditional), unencrypted: RSA of 2048 bits
    # (1024 at the very least, RFC 8301) or Ed25519. Re-read when it changes.
    key_file: Path

    @model_validator(mode="after")
    def _record_name_fits(self) -> DkimKey:
        name = f"{self.selector}._domainkey.{self.domain}"
        if len(name) > 253:
            raise ValueError(f"the key's DNS name {name} is longer than 253 characters")
        return self


class DkimConfig(Section):
    """DKIM signing in the queue service: every key whose domain is the ``From:``
    domain or a parent of it signs (an RSA and an Ed25519 key side by side give
    two signatures). No keys: nothing is signed."""

    keys: list[DkimKey] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _one_key_per_selector(cls, keys: list[DkimKey]) -> list[DkimKey]:
        seen: set[tuple[str, str]] = set()
        for key in keys:
            if (key.domain, key.selector) in seen:
                raise ValueError(
                    f"selector {key.selector!r} of {key.domain} is given twice "
                    "(one selector publishes one public key)"
                )
            seen.add((key.domain, key.selector))
        return keys


class ClassificationConfig(Section):
    # Users' bounce classification rules, read in this order before the
    # defaults (mailyard/rules/bounces.yaml): the first rule that matches wins.
    rules_files: list[Path] = Field(default_factory=list, max_length=20)


class BounceConfig(Section):
    # Events waiting in the DSN window hold their place in the prefetch: when
    # they fill it, the oldest notice goes early (bounce/window.py).
    prefetch: int = Field(128, ge=1)
    # The notices of one message that come within this long of its first one
    # (the jobs of a message split by domain, failing together) become one DSN
    # with a block per recipient. The events wait unacknowledged, so keep it
    # short: seconds. 0 sends every event's notice at once.
    dsn_window: Duration = Field(timedelta(seconds=5), ge=timedelta(0), le=timedelta(minutes=5))
    # Original headers quoted in a DSN are cut at this size.
    max_quoted_headers: int = Field(65536, ge=1024)
    # RET=FULL (RFC 3461 §4.3): a failed DSN returns the whole message up to
    # this size; a larger one is returned as its headers (as Postfix does past
    # bounce_size_limit: a message cut short would be broken MIME). The
    # failure events of RET=FULL messages carry the message, so keep this
    # well under the broker's max_message_size.
    max_quoted_message: int = Field(10 * 1024 * 1024, ge=0)
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)
    # VERP (mailyard/verp.py): outgoing mail is sent one recipient per
    # transaction with an envelope sender on this domain that names the
    # recipient under an HMAC, so asynchronous bounces come back here and
    # say whose they are. One of ingress.local_domains. Unset: senders as given.
    return_path_domain: DomainName | None = None
    # The HMAC secret, at least 16 bytes: the first line signs, further lines
    # (previous secrets) still verify. Re-read when it changes.
    verp_secret_file: Path | None = None

    @model_validator(mode="after")
    def _verp_needs_a_secret(self) -> BounceConfig:
        if self.return_path_domain is not None and self.verp_secret_file is None:
            raise ValueError(
                "return_path_domain needs bounce.verp_secret_file (the HMAC secret "
                "that signs and verifies the VERP addresses)"
            )
        return self


class SuppressionConfig(Section):
    """The suppression list (``mailyard/suppression``): addresses mail is not sent to.

    One list for every replica, kept on the broker (the ``<prefix>.suppression``
    log). The bounce service adds hard bounces and expiry strikes to it, the
    queue service checks every recipient against it before a message is split
    into jobs, and ``mailyard suppression add|remove`` changes it by hand.
    """

    # How long a hard bounce of the classes InvalidRecipient, BadDomain and
    # InactiveMailbox keeps the address on the list (then mail goes to it again).
    hard_bounce_expiry: Duration = timedelta(days=365)
    # Soft bounces never suppress on their own; this many different messages
    # to one recipient expiring (queue.max_lifetime) within
    # expired_strikes_window do. 0 turns it off.
    expired_strikes: int = Field(3, ge=0, le=1000)
    # Only expiries this recent count. Nothing else resets the count: a
    # delivery to the address in between does not (the bounce service does
    # not hear deliveries); a suppression added or removed does.
    expired_strikes_window: Duration = timedelta(days=30)
    # How long expired_strikes keep the address on the list.
    expired_strikes_expiry: Duration = timedelta(days=30)
    # Suppress a complaint (an ARF report) whose recipient only the report
    # names (no VERP address of ours verified it: bounce.return_path_domain
    # unset, or the provider redacted it). Anyone who can mail fbl@ or the
    # return-path domain can write such a report; without VERP, every
    # complaint is of that kind.
    unverified_complaints: bool = True
    # How often the bounce service appends a snapshot of the whole list to the
    # log, so that a process starting reads the log from the last snapshot
    # rather than from its beginning. 0: never (every start replays all of it).
    snapshot_interval: Duration = timedelta(days=1)

    @field_validator("hard_bounce_expiry", "expired_strikes_window", "expired_strikes_expiry")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least 1s")
        return value


# Mailbox providers that get their own label in per-destination metrics;
# every other domain is counted as "other", so the label stays bounded.
DEFAULT_DESTINATIONS = (
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "aol.com", "icloud.com", "me.com", "gmx.com", "gmx.de", "web.de",
    "yandex.ru", "mail.ru", "qq.com", "163.com", "orange.fr", "free.fr", "comcast.net",
)  # fmt: skip


class MetricsConfig(Section):
    host: str = "0.0.0.0"
    port: Port = 9102
    # How often each process reads queue depths from the broker.
    queue_poll_interval: Duration = timedelta(seconds=15)
    destinations: list[DomainName] = Field(
        default_factory=lambda: list(DEFAULT_DESTINATIONS), max_length=200
    )


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """All of Mailyard's configuration (see examples/mailyard.yaml)."""

    model_config = SettingsConfigDict(
        env_prefix="MAILYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    hostname: str = Field(default_factory=socket.getfqdn, min_length=1)
    # On SIGTERM: stop intake, then give in-flight work this long to finish.
    shutdown_grace: Duration = timedelta(seconds=25)
    # uvloop (the 'fast' extra) when installed, else asyncio's own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    broker: BrokerConfig = BrokerConfig()
    ingress: IngressConfig = IngressConfig()
    queue: QueueConfig = QueueConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    bounce: BounceConfig = BounceConfig()
    dkim: DkimConfig = DkimConfig()
    suppression: SuppressionConfig = SuppressionConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _source_address_classes_exist(self) -> Settings:
        problems = [
            problem
            for index, entry in enumerate(self.delivery.source_addresses)
            for problem in unknown_classes(
                f"delivery.source_addresses.{index}.classes", entry.classes, self.queue.classes
            )
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _return_path_domain_is_local(self) -> Settings:
        domain = self.bounce.return_path_domain
        if domain is not None and domain not in self.ingress.local_domains:
            raise ValueError(
                f"bounce.return_path_domain {domain} must be one of ingress.local_domains "
                f"({', '.join(self.ingress.local_domains) or 'none set'}): bounces to it "
                "must be accepted and reach the bounce service"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which arrives as init values.
        return _Environment(settings_cls), init_settings


class _Environment(EnvSettingsSource):
    """Environment variables; a list of plain values may also be comma-separated.

    ``MAILYARD_QUEUE__RETRY_DELAYS=5m,10m`` is what people write; JSON
    (``'["5m","10m"]'``) works too, and is the only way for lists of objects.
    """

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            if isinstance(value, str) and not value.lstrip().startswith(("[", "{")):
                return [item.strip() for item in value.split(",") if item.strip()]
            raise


class ConfigError(Exception):
    """The configuration cannot be used; the message names every bad key."""


def parse_host_port(value: str, *, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ``("127.0.0.1", 5353)``; ``"[::1]:53"`` and bare hosts too."""
    text = value.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r}: bad port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: bad port")
    return host, int(port_text)


def load_settings(path: Path | None = None) -> Settings:
    """Read the YAML file (if any), apply the environment, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys at the top")
        data = loaded or {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source=str(path) if path else None)) from exc
    except SettingsError as exc:
        names = sorted(name for name in os.environ if name.startswith("MAILYARD_"))
        raise ConfigError(
            f"invalid configuration in the environment ({', '.join(names)}): {exc}; "
            "lists and mappings there are JSON, e.g. "
            "MAILYARD_INGRESS__LISTEN='[{\"port\": 25}]'"
        ) from exc


def describe_errors(exc: ValidationError, *, source: str | None) -> str:
    lines = [f"invalid configuration{f' in {source}' if source else ''}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in error and not isinstance(error["input"], dict | list):
            message += f" (got {error['input']!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)
