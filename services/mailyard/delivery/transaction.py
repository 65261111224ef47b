"""One outbound SMTP transaction as a state machine: bytes out, replies in — no I/O.

h11's habit, for the client side of RFC 5321 with PIPELINING (RFC 2920):

    transaction = Transaction(envelope, extensions)
    send(transaction.start())
    while not transaction.done:
        send(transaction.receive(await read_reply()))
    transaction.results     # a Reply for every recipient
    transaction.reusable    # may the session carry the next transaction?

With PIPELINING, MAIL, every RCPT and DATA go out in one write and their
replies come back in that order; without it, one command per reply. What
each reply means:

- MAIL refused → that reply is every recipient's;
- a RCPT refused → that recipient's reply; ``452`` (too many recipients,
  RFC 5321 §4.5.3.1.10) → the recipient is for a new transaction at once
  (:attr:`Transaction.again`), not for the retry ladder;
- ``421`` anywhere → the server is closing: every recipient not yet decided
  gets it, and the session is not reused;
- no recipient accepted, or DATA refused → the transaction is abandoned
  (a pipelined ``354`` is first ended with a lone dot, §3.1 of RFC 2920)
  and RSET keeps the session usable;
- after ``354`` the message goes out; the final reply is every accepted
  recipient's.

:attr:`Transaction.waiting_for` names the stage whose reply is awaited, so
the driver can apply RFC 5321 §4.5.3.2's timeout for it (10 minutes after
the final dot, not the command timeout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mailyard import sevenbit
from mailyard.delivery.protocol import data_payload, is_eight_bit, mail_command, rcpt_command
from mailyard.reply import Reply

NO_SMTPUTF8 = Reply(
    553, "5.6.7", "The message needs SMTPUTF8 (RFC 6531), which the receiving server lacks"
)


class Stage(Enum):
    """What the transaction waits for."""

    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the 354
    DATA_END = "data_end"  # the reply after the final dot
    RSET = "rset"
    DONE = "done"

    @property
    def timeout(self) -> float:
        """RFC 5321 §4.5.3.2, in seconds: 10 minutes for the final reply."""
        return _TIMEOUTS[self]


_TIMEOUTS = {
    Stage.MAIL: 300.0,
    Stage.RCPT: 300.0,
    Stage.DATA: 120.0,
    Stage.DATA_END: 600.0,
    Stage.RSET: 300.0,
    Stage.DONE: 0.0,
}


@dataclass(frozen=True)
class Dsn:
    """What the sender asked of DSNs, passed on to a next hop that offers DSN (RFC 3461)."""

    ret: str = ""
    envid: str = ""
    notify: dict[str, str] = field(default_factory=dict)  # recipient → NOTIFY
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient → ORCPT


# What a job without DSN options passes on: one shared value (a frozen
# dataclass built per transaction showed in the delivery profile).
NO_DSN = Dsn()


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    dsn: Dsn | None = None
    smtputf8: bool = False  # an address needs SMTPUTF8


class Transaction:
    def __init__(self, envelope: Envelope, extensions: dict[str, str]) -> None:
        self.envelope = envelope
        self.pipelining = "PIPELINING" in extensions
        self.results: dict[str, Reply] = {}
        self.again: list[str] = []  # refused with 452: for a new transaction at once
        self.reusable = True
        self.data_sent = False  # the message went out: a lost reply may mean delivered
        self._extensions = extensions
        self._accepted: list[str] = []
        self._rcpt_replies = 0
        self._mail: Reply | None = None
        self._data_pipelined = False
        self._stage = Stage.MAIL
        self._rcpts: list[bytes] = []
        self._too_many: dict[str, Reply] = {}  # the 452s, should nobody be accepted
        self._ending_empty = False
        self._content = envelope.content

    @property
    def done(self) -> bool:
        return self._stage is Stage.DONE

    @property
    def waiting_for(self) -> Stage:
        return self._stage

    def start(self) -> bytes:
        """The first write: MAIL (with every RCPT and DATA when pipelining)."""
        envelope, extensions = self.envelope, self._extensions
        if envelope.smtputf8 and "SMTPUTF8" not in extensions:
            return self._refuse_all(NO_SMTPUTF8)
        eight_bit = is_eight_bit(self._content)
        if eight_bit and "8BITMIME" not in extensions:
            # RFC 6152 §3: never 8-bit octets to a 7-bit server; quoted-printable.
            self._content = sevenbit.convert(self._content)
            eight_bit = is_eight_bit(self._content)  # 8-bit headers stay as they were
        size = len(self._content)
        limit = _size_limit(extensions)
        if limit and size > limit:
            return self._refuse_all(
                Reply(
                    552, "5.3.4", f"Message of {size} octets exceeds the server's limit of {limit}"
                )
            )
        dsn = envelope.dsn if envelope.dsn is not None and "DSN" in extensions else NO_DSN
        try:
            mail = mail_command(
                envelope.mail_from,
                size=size if "SIZE" in extensions else None,
                eight_bit="8BITMIME" in extensions and eight_bit,
                ret=dsn.ret,
                envid=dsn.envid,
                smtputf8=envelope.smtputf8,
            )
            self._rcpts = [
                rcpt_command(r, notify=dsn.notify.get(r, ""), orcpt=dsn.orcpt.get(r, ""))
                for r in envelope.recipients
            ]
        except ValueError as exc:
            return self._refuse_all(Reply(553, "5.1.3", f"unusable address: {exc}"))
        if self.pipelining:
            self._data_pipelined = True
            return mail + b"".join(self._rcpts) + b"DATA\r\n"
        return mail

    def _refuse_all(self, reply: Reply) -> bytes:
        """Decided before anything is sent: nothing goes out, the session stays as it was."""
        self.results = dict.fromkeys(self.envelope.recipients, reply)
        self._stage = Stage.DONE
        return b""

    def receive(self, reply: Reply) -> bytes:
        """Feed the next reply; returns what to write next (often nothing)."""
        stage = self._stage
        if stage is Stage.MAIL:
            return self._on_mail(reply)
        if stage is Stage.RCPT:
            return self._on_rcpt(reply)
        if stage is Stage.DATA:
            return self._on_data(reply)
        if stage is Stage.DATA_END:
            return self._on_end(reply)
        if stage is Stage.RSET:
            if not reply.is_positive:
                self.reusable = False
            self._stage = Stage.DONE
            return b""
        raise RuntimeError("a reply after the transaction was over")

    def _on_mail(self, reply: Reply) -> bytes:
        self._mail = reply
        if reply.code == 421:
            self._close_with(reply)
            return b""
        if not self.pipelining:
            if not reply.is_positive:
                self._decide_rest(reply)
                return self._abandon()
            self._stage = Stage.RCPT
            return self._rcpts[0]
        self._stage = Stage.RCPT
        return b""

    def _on_rcpt(self, reply: Reply) -> bytes:
        recipient = self.envelope.recipients[self._rcpt_replies]
        self._rcpt_replies += 1
        mail_ok = self._mail is not None and self._mail.is_positive
        if reply.code == 421:
            if mail_ok:
                self.results[recipient] = reply
            self._close_with(self._mail if not mail_ok and self._mail else reply)
            return b""
        if mail_ok:
            if reply.is_positive:
                self._accepted.append(recipient)
            elif reply.code == 452 and reply.status in ("4.5.3", ""):
                self.again.append(recipient)
                self._too_many[recipient] = reply
            else:
                self.results[recipient] = reply
        more = self._rcpt_replies < len(self._rcpts)
        if self.pipelining:
            if not more:
                self._stage = Stage.DATA
            return b""
        if more:
            return self._rcpts[self._rcpt_replies]
        if not self._accepted:
            self._decide_rest(self._first_refusal())
            return self._abandon()
        self._stage = Stage.DATA
        return b"DATA\r\n"

    def _on_data(self, reply: Reply) -> bytes:
        mail_ok = self._mail is not None and self._mail.is_positive
        if reply.code == 421:
            self._close_with(reply if mail_ok else self._mail or reply)
            return b""
        if not mail_ok:
            self._decide_rest(self._mail or reply)
            return self._abandon(data_reply=reply)
        if not self._accepted:
            self._decide_rest(self._first_refusal())
            return self._abandon(data_reply=reply)
        if reply.code != 354:
            self._decide_rest(reply)
            return self._abandon()
        self._stage = Stage.DATA_END
        self.data_sent = True
        return data_payload(self._content)

    def _on_end(self, reply: Reply) -> bytes:
        if reply.code == 421:
            self._close_with(reply)
            return b""
        if self._ending_empty:  # the lone dot of an abandoned pipelined DATA
            self._stage = Stage.RSET
            return b""
        self._decide_rest(reply)
        self._stage = Stage.DONE
        return b""

    def _abandon(self, data_reply: Reply | None = None) -> bytes:
        """End a transaction that will not carry the message, keeping the session.

        A pipelined DATA the server accepted (354) is ended with a lone dot
        first (RFC 2920 §3.1); its reply is read, then RSET's.
        """
        if data_reply is not None and data_reply.code == 354:
            self._stage = Stage.DATA_END
            self._ending_empty = True
            return b".\r\nRSET\r\n"
        self._stage = Stage.RSET
        return b"RSET\r\n"

    def _first_refusal(self) -> Reply:
        refusals = list(self.results.values()) or list(self._too_many.values())
        return refusals[0] if refusals else Reply(451, "4.4.0", "no recipient was accepted")

    def _decide_rest(self, reply: Reply) -> None:
        """Every recipient not yet decided gets ``reply``.

        A 452 means "not in this transaction"; when nobody was accepted in
        it, trying again at once would only repeat it: then the 452 stands.
        """
        if not self._accepted:
            self.results.update(self._too_many)
            self.again = []
        for recipient in self.envelope.recipients:
            if recipient not in self.results and recipient not in self.again:
                self.results[recipient] = reply

    def _close_with(self, reply: Reply) -> None:
        """The server said 421: it is closing the session."""
        for recipient in self.envelope.recipients:
            self.results.setdefault(recipient, reply)
        self.again = [r for r in self.again if r not in self.results]
        self.reusable = False
        self._stage = Stage.DONE


def _size_limit(extensions: dict[str, str]) -> int:
    value = extensions.get("SIZE", "")
    return int(value) if value.isdigit() else 0
