"""MAIL FROM and RCPT TO as ingress reads them: the path and its ESMTP parameters — no I/O.

aiosmtpd parses these with the email package and upper-cases every
parameter, which would lose what RFC 3461 says to keep exactly as given
(``ENVID``, ``ORCPT``); so the raw argument is read here, into typed values
or a :class:`~mailyard.reply.Reply` that says what was wrong.

Standards: RFC 5321 §4.1.2 and §4.5.3.1 (paths and their limits), RFC 1870
(SIZE), RFC 6152 (BODY=8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN: RET,
ENVID, NOTIFY, ORCPT, xtext), RFC 4954 (AUTH=).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailyard.reply import Reply
from mailyard.xtext import is_xtext

LOCAL_PART_LIMIT = 64  # RFC 5321 §4.5.3.1.1
DOMAIN_LIMIT = 255  # §4.5.3.1.2
PATH_LIMIT = 256  # §4.5.3.1.3, angle brackets included

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9-]+;")


class ParamError(Exception):
    """A command argument that cannot be accepted; ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True)
class MailFrom:
    address: str  # "" for the null sender
    size: int | None = None
    eight_bit: bool = False  # BODY=8BITMIME
    smtputf8: bool = False
    ret: str = ""  # FULL | HDRS | ""
    envid: str = ""  # as given, xtext
    parameters: int = 0  # how many were given (none are allowed after HELO)


@dataclass(frozen=True)
class RcptTo:
    address: str
    notify: str = ""  # "" (the default), NEVER, or a comma list of SUCCESS, FAILURE, DELAY
    orcpt: str = ""  # as given: "rfc822;" + xtext


@dataclass(frozen=True)
class Extensions:
    """What this session advertised, which decides which parameters are known."""

    size_limit: int | None = None
    smtputf8: bool = True
    dsn: bool = True
    auth: bool = False


def split_path(argument: str, keyword: str, *, sender: bool) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=1`` → ``("a@b", ["SIZE=1"])``; a source route is dropped."""
    code = "5.1.7" if sender else "5.1.3"
    head, colon, rest = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise ParamError(
            Reply(501, "5.5.4", f"Syntax: {'MAIL FROM' if sender else 'RCPT TO'}:<address>")
        )
    rest = rest.lstrip(" ")
    if not rest.startswith("<"):
        # RFC 5321 wants angle brackets; like Postfix (strict_rfc821_envelopes
        # = no) we take a bare address from clients that leave them out.
        address, _, parameters = rest.partition(" ")
        if not address or any(c in address for c in '<>"'):
            raise ParamError(Reply(501, code, "The address must be in angle brackets"))
        if len(address.encode("utf-8", "surrogateescape")) + 2 > PATH_LIMIT:
            raise ParamError(Reply(501, code, f"Path longer than {PATH_LIMIT} octets"))
        return address, parameters.split()
    end = _closing_bracket(rest)
    if end < 0:
        raise ParamError(Reply(501, code, "The address has no closing angle bracket"))
    path = rest[: end + 1]
    if len(path.encode("utf-8", "surrogateescape")) > PATH_LIMIT:
        raise ParamError(Reply(501, code, f"Path longer than {PATH_LIMIT} octets"))
    address = path[1:-1]
    if address.startswith("@"):  # <@hop1,@hop2:user@domain>: routes are ignored (§4.1.1.3)
        _, colon, address = address.partition(":")
        if not colon:
            raise ParamError(Reply(501, code, "Bad source route"))
    parameters = rest[end + 1 :]
    if parameters and not parameters.startswith(" "):
        raise ParamError(Reply(501, "5.5.4", "Parameters must follow the address after a space"))
    return address, parameters.split()


def _closing_bracket(text: str) -> int:
    """The ``>`` that closes the path, skipping quoted local parts (``<"a>b"@c>``)."""
    quoted = escaped = False
    for index, char in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def check_address(address: str, *, sender: bool, smtputf8: bool) -> None:
    """Control characters, encodings and length limits (RFC 5321 §4.5.3.1, RFC 6531)."""
    code = "5.1.7" if sender else "5.1.3"
    if any(ord(char) < 0x20 or char == "\x7f" for char in address):
        raise ParamError(Reply(501, code, "Control characters (NUL, CR, LF, ...) in the address"))
    if any(0xDC80 <= ord(char) <= 0xDCFF for char in address):  # surrogateescape'd bytes
        raise ParamError(Reply(553, "5.6.7", "The address is not valid UTF-8"))
    if not address.isascii() and not smtputf8:
        raise ParamError(Reply(553, "5.6.7", "Non-ASCII address without SMTPUTF8 (RFC 6531)"))
    local, at, domain = address.rpartition("@")
    if not at:
        return  # the policy says what is wrong with it
    if len(local.encode()) > LOCAL_PART_LIMIT:
        raise ParamError(
            Reply(501, code, f"Local part longer than {LOCAL_PART_LIMIT} octets (RFC 5321)")
        )
    if len(domain.encode()) > DOMAIN_LIMIT:
        raise ParamError(Reply(501, code, f"Domain longer than {DOMAIN_LIMIT} octets (RFC 5321)"))


def parse_mail(argument: str, extensions: Extensions) -> MailFrom:
    address, raw = split_path(argument, "FROM", sender=True)
    params = _parameters(raw)
    mail = _mail_params(address, params, extensions)
    if mail.address:
        check_address(mail.address, sender=True, smtputf8=mail.smtputf8)
    return mail


def _mail_params(address: str, params: dict[str, str | None], extensions: Extensions) -> MailFrom:
    size: int | None = None
    eight_bit = smtputf8 = False
    ret = envid = ""
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise ParamError(Reply(501, "5.5.4", "SIZE takes a number of octets"))
            size = int(value)
            if extensions.size_limit and size > extensions.size_limit:
                raise ParamError(
                    Reply(
                        552,
                        "5.3.4",
                        f"Message size exceeds the limit of {extensions.size_limit} octets",
                    )
                )
        elif key == "BODY":
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME"):
                raise ParamError(Reply(501, "5.5.4", "BODY is 7BIT or 8BITMIME"))
            eight_bit = body == "8BITMIME"
        elif key == "SMTPUTF8" and extensions.smtputf8:
            if value is not None:
                raise ParamError(Reply(501, "5.5.4", "SMTPUTF8 takes no value"))
            smtputf8 = True
        elif key == "RET" and extensions.dsn:
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise ParamError(Reply(501, "5.5.4", "RET is FULL or HDRS (RFC 3461)"))
        elif key == "ENVID" and extensions.dsn:
            envid = value or ""
            if not envid or len(envid) > 100 or not is_xtext(envid):
                raise ParamError(Reply(501, "5.5.4", "ENVID must be 1 to 100 characters of xtext"))
        elif key == "AUTH" and extensions.auth:
            if not value or not is_xtext(value):
                raise ParamError(Reply(501, "5.5.4", "AUTH= takes an xtext mailbox or <>"))
        else:
            raise ParamError(Reply(555, "5.5.4", f"MAIL FROM parameter {key} not recognized"))
    return MailFrom(address, size, eight_bit, smtputf8, ret, envid, len(params))


def parse_rcpt(argument: str, extensions: Extensions, *, smtputf8: bool) -> RcptTo:
    address, raw = split_path(argument, "TO", sender=False)
    if not address:
        raise ParamError(Reply(501, "5.1.3", "An empty recipient address is not a mailbox"))
    check_address(address, sender=False, smtputf8=smtputf8)
    notify = orcpt = ""
    for key, value in _parameters(raw).items():
        if key == "NOTIFY" and extensions.dsn:
            notify = _notify(value)
        elif key == "ORCPT" and extensions.dsn:
            orcpt = value or ""
            kind, semicolon, text = orcpt.partition(";")
            if not semicolon or not _ADDRESS_TYPE.fullmatch(kind + ";") or not text:
                raise ParamError(Reply(501, "5.5.4", "ORCPT is addr-type;xtext, e.g. rfc822;a@b"))
            if len(orcpt) > 500 or not is_xtext(text):
                raise ParamError(Reply(501, "5.5.4", "ORCPT's address must be xtext (RFC 3461)"))
        else:
            raise ParamError(Reply(555, "5.5.4", f"RCPT TO parameter {key} not recognized"))
    return RcptTo(address, notify, orcpt)


def _notify(value: str | None) -> str:
    items = [item.strip().upper() for item in (value or "").split(",")]
    if items == ["NEVER"]:
        return "NEVER"
    if not items or not all(item in _NOTIFY for item in items) or len(set(items)) != len(items):
        raise ParamError(
            Reply(501, "5.5.4", "NOTIFY is NEVER, or one or more of SUCCESS, FAILURE, DELAY")
        )
    return ",".join(item for item in ("SUCCESS", "FAILURE", "DELAY") if item in items)


def _parameters(raw: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in raw:
        key, equals, value = item.partition("=")
        if not _KEYWORD.fullmatch(key) or (equals and not value):
            raise ParamError(Reply(501, "5.5.4", f"Bad parameter syntax: {item[:40]!r}"))
        upper = key.upper()
        if upper in params:
            raise ParamError(Reply(501, "5.5.4", f"{upper} given twice"))
        params[upper] = value if equals else None
    return params
