"""What a recipient's NOTIFY asks for (RFC 3461 §4.1) — no I/O.

Ingress stores NOTIFY as given: empty (not given), ``NEVER``, or a comma
list of ``SUCCESS``, ``FAILURE`` and ``DELAY``. Each service asks one
question of it: "does this recipient want a notice of this kind?"

- not given: failures and delays, never success (§4.1 leaves the default
  to the MTA between FAILURE and FAILURE,DELAY; like Postfix we warn of
  delays, but only once ``queue.delay_warning`` is set);
- ``NEVER``: no notice of any kind;
- a list: exactly the conditions named.
"""

from __future__ import annotations

from enum import StrEnum


class Condition(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


_DEFAULT = frozenset({Condition.FAILURE, Condition.DELAY})


def wants(notify: str, condition: Condition) -> bool:
    """Whether a recipient whose NOTIFY is ``notify`` asked for a ``condition`` notice."""
    if not notify:
        return condition in _DEFAULT
    return condition.value in notify.upper().split(",")
