"""The shape of the package, enforced: who may import what.

- no service package imports another (they talk only through the broker);
- nothing outside ``mailyard.broker.rabbitmq`` imports aio-pika (or aiormq,
  pamqp): the broker port is the only way in;
- the protocol and policy modules import no asyncio, socket or aio_pika:
  they are pure and tested without I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "mailyard"
SERVICES = ("ingress", "queue", "delivery", "bounce")
AMQP = ("aio_pika", "aiormq", "pamqp")
PURE = (
    "ingress/policy.py",
    "ingress/params.py",
    "ingress/upload.py",
    "ingress/limits.py",
    "ingress/replies.py",
    "ingress/trace.py",
    "ingress/auth.py",
    "delivery/protocol.py",
    "delivery/mx.py",
    "delivery/transaction.py",
    "delivery/tlspolicy.py",
    "delivery/mtasts.py",
    "delivery/dane.py",
    "delivery/expiring.py",
    "delivery/fairshare.py",
    "delivery/tlsrpt.py",
    "delivery/tlsrpt_mail.py",
    "queue/split.py",
    "queue/classes.py",
    "queue/schedule.py",
    "queue/plan.py",
    "delivery/plan.py",
    "bounce/plan.py",
    "bounce/dsn.py",
    "bounce/notice.py",
    "bounce/suppress.py",
    "queue/suppress.py",
    "suppression/entries.py",
    "suppression/records.py",
    "suppression/state.py",
    "suppression/replay.py",
    "xtext.py",
    "notify.py",
)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "v1" not in p.parts)


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(service):
    others = {f"mailyard.{name}" for name in SERVICES if name != service}
    for path in modules(PACKAGE / service):
        bad = {m for m in imports(path) if any(m == o or m.startswith(o + ".") for o in others)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_shared_code_imports_no_service():
    """The suppression list is used by queue and bounce: it may depend on neither."""
    services = {f"mailyard.{name}" for name in SERVICES}
    for path in modules(PACKAGE / "suppression"):
        bad = {m for m in imports(path) if any(m == s or m.startswith(s + ".") for s in services)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_only_the_rabbitmq_adapter_knows_amqp():
    rabbitmq = PACKAGE / "broker" / "rabbitmq"
    for path in modules(PACKAGE):
        if rabbitmq in path.parents:
            continue
        bad = {m for m in imports(path) if m.split(".")[0] in AMQP}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("module", PURE)
def test_protocol_and_policy_modules_do_no_io(module):
    found = {m.split(".")[0] for m in imports(PACKAGE / module)}
    assert not found & {"asyncio", "socket", *AMQP}, f"{module} imports {sorted(found)}"


def test_the_rules_see_real_imports():
    """The checks above would pass on an empty tree: make sure they read code."""
    assert "aio_pika" in imports(PACKAGE / "broker" / "rabbitmq" / "client.py")
    assert "mailyard.broker" in {m for m in imports(PACKAGE / "queue" / "service.py")}
    assert len(modules(PACKAGE)) > 50
