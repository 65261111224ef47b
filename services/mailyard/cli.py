"""``mailyard`` — run a service, or all of them, or check the broker.

mailyard ingress|queue|delivery|bounce [--config FILE]   one service (RabbitMQ)
mailyard all [--config FILE]                             all four in one process
mailyard check-broker [--config FILE]                    can we reach the broker?
mailyard auth hash                                       hash a password for the users file
mailyard dkim keygen --domain D --selector S --algorithm rsa|ed25519 --out FILE
                                                         a new DKIM key; prints its DNS record
mailyard suppression list [--json] [--source S]          the suppression list
mailyard suppression add ADDRESS [--reason TEXT] [--expires 30d] [--scope DOMAIN]
mailyard suppression remove ADDRESS [--scope DOMAIN]
mailyard suppression check ADDRESS [--scope DOMAIN]      exit 0 if suppressed, 1 if not
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from mailyard import logs
from mailyard.addresses import AddressError
from mailyard.broker import BrokerUnavailable, broker_factory, is_embedded
from mailyard.broker.monitor import QueueMonitor
from mailyard.config import (
    ConfigError,
    Settings,
    load_settings,
    normalize_domain,
    normalize_selector,
)
from mailyard.durations import parse_duration
from mailyard.filewatch import FileProblem
from mailyard.runtime import Service, serve
from mailyard.suppression.entries import Source, normalize_address, normalize_scope

SERVICE_NAMES = ("ingress", "queue", "delivery", "bounce")
SUPPRESSION_ACTIONS = ("list", "add", "remove", "check")

EMBEDDED_IS_ONE_PROCESS = (
    "mailyard: broker.url is 'embedded': one process owns a spool, so only `mailyard all` "
    "can run on it; run the services one by one against RabbitMQ (broker.url: amqp://...)"
)


def build_services(names: Sequence[str], settings: Settings) -> list[Service]:
    # Imported here so that running one service loads only its own code.
    broker_for = broker_factory(settings)
    services: list[Service] = []
    for name in names:
        broker = broker_for(name)
        if name == "ingress":
            from mailyard.ingress.service import IngressService

            services.append(IngressService(settings, broker))
        elif name == "queue":
            from mailyard.queue.service import QueueService

            services.append(QueueService(settings, broker))
        elif name == "delivery":
            from mailyard.delivery.service import DeliveryService

            services.append(DeliveryService(settings, broker))
        elif name == "bounce":
            from mailyard.bounce.service import BounceService

            services.append(BounceService(settings, broker))
    services.append(
        QueueMonitor(broker_for("monitor"), settings.metrics.queue_poll_interval.total_seconds())
    )
    return services


async def check_broker(settings: Settings) -> int:
    broker = broker_factory(settings)("check")
    try:
        await broker.connect(attempts=1)
    except (BrokerUnavailable, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # the embedded spool's own errors name their cause
        print(f"mailyard: {exc}", file=sys.stderr)
        return 1
    await broker.close()
    if is_embedded(settings.broker):
        print(f"embedded spool in {settings.broker.spool_dir} is usable")
    else:
        print(f"RabbitMQ reachable; topology {settings.broker.prefix}.* declared")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mailyard", description="Mailyard mail transfer agent")
    parser.add_argument(
        "command",
        choices=[
            *SERVICE_NAMES,
            "all",
            "check-broker",
            "status",
            "probe",
            "auth",
            "dkim",
            "suppression",
        ],
        help="a service to run, 'all' for every service in one process, 'check-broker', "
        "'status' (replicas and queue depths), 'probe' (send one test message), "
        "'auth hash' (hash a password read from standard input for ingress.auth.users_file), "
        "'dkim keygen' (write a new DKIM private key, print the DNS record to publish) "
        "or 'suppression list|add|remove|check' (the addresses mail is not sent to)",
    )
    parser.add_argument("action", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("operand", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("MAILYARD_CONFIG"),
        help="YAML configuration file (default: $MAILYARD_CONFIG); "
        "MAILYARD_* environment variables override it",
    )
    status = parser.add_argument_group("status")
    status.add_argument("--namespace", help="Kubernetes namespace (default: the current one)")
    status.add_argument("--release", help="Helm release name, when several are installed")
    probe = parser.add_argument_group("probe")
    probe.add_argument("--host", default="127.0.0.1", help="ingress host (default 127.0.0.1)")
    probe.add_argument("--port", type=int, default=25, help="ingress port (default 25)")
    probe.add_argument("--to", dest="recipient", help="recipient, e.g. postmaster@<local domain>")
    probe.add_argument("--from", dest="sender", default="", help="envelope sender (default <>)")
    probe.add_argument("--timeout", type=float, default=30, help="seconds (default 30)")
    keygen = parser.add_argument_group("dkim keygen")
    keygen.add_argument("--domain", type=_dkim_name(normalize_domain), help="signing domain (d=)")
    keygen.add_argument("--selector", type=_dkim_name(normalize_selector), help="selector (s=)")
    keygen.add_argument("--algorithm", choices=["rsa", "ed25519"], help="rsa or ed25519")
    keygen.add_argument("--out", type=Path, help="private key file to write (mode 0600)")
    keygen.add_argument("--bits", type=int, help="RSA key size, 2048 to 4096 (default 2048)")
    keygen.add_argument("--force", action="store_true", help="replace an existing --out file")
    suppression = parser.add_argument_group("suppression list|add|remove|check ADDRESS")
    suppression.add_argument(
        "--json", action="store_true", help="one JSON array of entries, nothing else"
    )
    suppression.add_argument(
        "--source", choices=[s.value for s in Source], help="list: only entries of this source"
    )
    suppression.add_argument("--reason", default="", help="add: why (shown in the DSN)")
    suppression.add_argument(
        "--expires", type=_duration, help="add: stop applying after this long (30d); default never"
    )
    suppression.add_argument(
        "--scope",
        type=_checked(normalize_scope),
        help="add, remove, check: only for mail from this envelope sender domain",
    )
    args = parser.parse_args(argv)
    if args.command == "probe" and not args.recipient:
        parser.error("probe needs --to")
    if args.command == "auth" and args.action != "hash":
        parser.error("auth needs a subcommand: hash")
    if args.command == "dkim" and args.action != "keygen":
        parser.error("dkim needs a subcommand: keygen")
    if args.command not in ("auth", "dkim", "suppression") and args.action is not None:
        parser.error(f"unrecognized arguments: {args.action}")
    if args.command == "suppression":
        _check_suppression_args(parser, args)
    elif args.operand is not None:
        parser.error(f"unrecognized arguments: {args.operand}")
    if args.command == "dkim":
        missing = [
            f"--{n}" for n in ("domain", "selector", "algorithm", "out") if not getattr(args, n)
        ]
        if missing:
            parser.error(f"dkim keygen needs {', '.join(missing)}")
        if args.bits is not None and args.algorithm != "rsa":
            parser.error("--bits is only for --algorithm rsa")
    return args


def _check_suppression_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.action not in SUPPRESSION_ACTIONS:
        parser.error("suppression needs a subcommand: list, add, remove or check")
    if args.action == "list":
        if args.operand is not None:
            parser.error(f"unrecognized arguments: {args.operand}")
    elif args.operand is None:
        parser.error(f"suppression {args.action} needs an ADDRESS")
    else:
        try:
            args.operand = normalize_address(args.operand)
        except AddressError as exc:
            parser.error(str(exc))
    given = {"--source": args.source, "--reason": args.reason, "--expires": args.expires}
    allowed = {"list": {"--source"}, "add": {"--reason", "--expires"}}.get(args.action, set())
    for flag, value in given.items():
        if value and flag not in allowed:
            parser.error(f"{flag} is not for suppression {args.action}")
    if args.scope is not None and args.action == "list":
        parser.error("--scope is not for suppression list")


def _dkim_name(normalize: Callable[[str], str]) -> Callable[[str], str]:
    return _checked(normalize)


def _checked(normalize: Callable[[str], str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return normalize(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _duration(value: str) -> timedelta:
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not duration:
        raise argparse.ArgumentTypeError("must be longer than 0")
    return duration


def suppression_command(settings: Settings, args: argparse.Namespace) -> int:
    """``mailyard suppression ...``: standard output carries only the answer."""
    from mailyard.suppression.command import Request, run

    # Service logs go to standard output; here only problems, on standard error.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="mailyard: %(message)s")
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    request = Request(
        action=args.action,
        address=args.operand or "",
        scope=args.scope,
        source=Source(args.source) if args.source else None,
        reason=args.reason,
        expires=args.expires,
        json=args.json,
    )
    return asyncio.run(run(settings, request))


def read_password() -> str | None:
    """One password: asked for twice without echo on a terminal, else read from stdin.

    From a pipe only a single trailing newline (LF or CRLF) is removed: any
    other space belongs to the password. Bytes are decoded as UTF-8, as
    ingress decodes what AUTH sends.
    """
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            print("mailyard: the passwords do not match", file=sys.stderr)
            return None
        return first
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        print("mailyard: the password is not valid UTF-8", file=sys.stderr)
        return None
    return text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text


def auth_hash() -> int:
    """``mailyard auth hash``: print the users-file hash of one password (no config needed)."""
    from mailyard.ingress.auth import hash_password

    try:
        password = read_password()
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 2
    if password is None:
        return 2
    if not password:
        print("mailyard: the password is empty", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def dkim_keygen(args: argparse.Namespace) -> int:
    """``mailyard dkim keygen``: write a new key, print its TXT record (no config needed)."""
    from mailyard.queue import dkimkeys

    out: Path = args.out
    if not args.force and (out.exists() or out.is_symlink()):
        print(f"mailyard: {out} exists; give --force to replace it", file=sys.stderr)
        return 2
    try:
        bits = dkimkeys.RSA_ADVISED_BITS if args.bits is None else args.bits
        private = dkimkeys.generate(args.algorithm, bits)
    except ValueError as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return 2
    record = dkimkeys.signing_key(private).record
    try:
        dkimkeys.write_key_file(out, private, replace=args.force)
    except FileExistsError:
        print(f"mailyard: {out} exists; give --force to replace it", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mailyard: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(
        f"mailyard: wrote a new {args.algorithm} key to {out} (mode 0600); publish this record, "
        f"then add to dkim.keys: {{domain: {args.domain}, selector: {args.selector}, "
        f"key_file: {out}}}",
        file=sys.stderr,
    )
    print(dkimkeys.dns_record(args.domain, args.selector, record))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "auth":
        return auth_hash()
    if args.command == "dkim":
        return dkim_keygen(args)
    if args.command == "probe":
        from mailyard.probe import probe

        return probe(args.host, args.port, args.recipient, args.sender, args.timeout)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"mailyard: {exc}", file=sys.stderr)
        return 2
    if args.command in SERVICE_NAMES and is_embedded(settings.broker):
        print(EMBEDDED_IS_ONE_PROCESS, file=sys.stderr)
        return 2
    if args.command == "suppression":
        return suppression_command(settings, args)
    logs.configure(settings.log.level)
    if args.command == "check-broker":
        return asyncio.run(check_broker(settings))
    if args.command == "status":
        from mailyard.status import status

        return status(settings, args.namespace, args.release)
    names = SERVICE_NAMES if args.command == "all" else (args.command,)
    try:
        services = build_services(names, settings)
    except (FileProblem, ConfigError) as exc:  # a file, or an address, the configuration names
        print(f"mailyard: {exc}", file=sys.stderr)
        return 2
    return run_loop(serve(services, settings), settings.event_loop)


def run_loop(main_coroutine: Coroutine[Any, Any, int], choice: str) -> int:
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("mailyard: event_loop is uvloop, which is not installed") from None
        else:
            return uvloop.run(main_coroutine)
    return asyncio.run(main_coroutine)


if __name__ == "__main__":
    sys.exit(main())
