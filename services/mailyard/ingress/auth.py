"""Who may submit mail: password hashes, the users file, failed-AUTH lock-out.

Pure building blocks for SMTP AUTH (RFC 4954, PLAIN RFC 4616, LOGIN); no
sockets. The rule that must never fail open: a login succeeds only when the
users file holds that user with a hash that the password verifies against.
Plain text, an unknown scheme, a malformed or truncated hash, bytes that are
not UTF-8 — each is a failure, never a pass and never an exception.

Secrets never reach a log line or an error message: not a password, an AUTH
payload or a hash. Errors about the users file name the key
``ingress.auth.users_file``, the user and the field, never the value.

The users file (YAML), re-read when it changes::

    app1:
      password: $scrypt$ln=14,r=8,p=1$<salt>$<hash>   # `mailyard auth hash`
      sender_domains: [example.com, example.org]      # absent: any domain
      class: transactional                            # optional message class

``class`` is the class of every message the user submits (it wins over
``queue.sender_classes`` and the ``X-Mailyard-Class:`` header); it must be
one of ``queue.classes``, or the file is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mailyard.config import CLASS_NAME_PATTERN, DEFAULT_CLASSES, DomainName, unknown_classes
from mailyard.filewatch import FileProblem, Watched, describe

KEY = "ingress.auth.users_file"

# --- password hashes ---------------------------------------------------------
#
# scrypt (RFC 7914) as OpenSSL implements it, through hashlib: memory-hard,
# so guessing on GPUs or ASICs costs memory as well as time. Not a fast hash
# (SHA-256, even salted): a stolen users file would fall to billions of
# guesses a second. Not a KDF of our own: OpenSSL's is reviewed, constant in
# its memory use and faster than anything in Python.
#
# Cost: N = 2**14, r = 8, p = 1 uses 16 MiB and took 47-48 ms per verify on
# a 2-vCPU AMD EPYC VM under load (OpenSSL 3.0, Python 3.11); N = 2**15 took
# 110 ms there, over the ~100 ms one AUTH may cost. The parameters live in
# each stored hash, so they can be raised for new hashes without breaking old
# ones. hashlib.scrypt releases the GIL: call verify from a worker thread.

SCHEME = "scrypt"
LOG_N, BLOCK_SIZE, PARALLELISM = 14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
# Stored parameters beyond these are refused (verify False): a typo such as
# ln=40 must not make one AUTH allocate terabytes or spin for hours.
MAX_LOG_N, MAX_BLOCK_SIZE, MAX_PARALLELISM = 20, 32, 16
MAX_MEMORY = 256 * 1024 * 1024

_HASH = re.compile(
    r"\$scrypt\$ln=(?P<ln>[0-9]{1,2}),r=(?P<r>[0-9]{1,3}),p=(?P<p>[0-9]{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<hash>[A-Za-z0-9+/]+)",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class _Hash:
    log_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def maxmem(self) -> int:
        # What OpenSSL allocates (128·r·(N+2) for V, 128·r·p for B), plus slack.
        return 128 * self.r * ((1 << self.log_n) + 2 + self.p) + 65536

    def derive(self, password: bytes) -> bytes:
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=1 << self.log_n,
            r=self.r,
            p=self.p,
            maxmem=self.maxmem,
            dklen=len(self.digest),
        )


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error
        return None


def _parse_hash(stored: str) -> _Hash | None:
    """The parameters, salt and digest of a stored hash; None unless well-formed and in bounds."""
    match = _HASH.fullmatch(stored)
    if match is None:
        return None
    log_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    salt, digest = _b64decode(match["salt"]), _b64decode(match["hash"])
    if salt is None or digest is None:
        return None
    parsed = _Hash(log_n, r, p, salt, digest)
    in_bounds = (
        1 <= log_n <= MAX_LOG_N
        and 1 <= r <= MAX_BLOCK_SIZE
        and 1 <= p <= MAX_PARALLELISM
        and 8 <= len(salt) <= 64
        and 16 <= len(digest) <= 64
        and parsed.maxmem <= MAX_MEMORY
    )
    return parsed if in_bounds else None


def is_password_hash(stored: str) -> bool:
    """True for a well-formed ``$scrypt$…`` value (what the users file must hold)."""
    return _parse_hash(stored) is not None


def hash_password(password: str) -> str:
    """``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64 without padding), with a new salt.

    One call takes as long as one verify (~50 ms; see the cost note above).
    """
    if not password:
        raise ValueError("the password is empty")
    new = _Hash(LOG_N, BLOCK_SIZE, PARALLELISM, os.urandom(SALT_BYTES), b"\0" * HASH_BYTES)
    digest = new.derive(password.encode("utf-8"))
    return (
        f"${SCHEME}$ln={new.log_n},r={new.r},p={new.p}${_b64encode(new.salt)}${_b64encode(digest)}"
    )


def _verify(password: bytes, stored: _Hash) -> bool:
    try:
        derived = stored.derive(password)
    except (ValueError, OverflowError):  # parameters OpenSSL refuses
        return False
    return hmac.compare_digest(derived, stored.digest)


def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match ``stored``? False, never an error, for anything malformed.

    Plain text and other schemes (``$2b$…``, ``{SHA}…``) are refused, not
    compared: the users file never holds plain text. Parameters are read
    from ``stored``; the comparison takes constant time. ~50 ms per call.
    """
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return _verify(encoded, parsed)


# --- the users file ----------------------------------------------------------


def _user_name(name: str) -> str:
    if not 1 <= len(name) <= 256 or not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError("a user name is 1 to 256 printable characters without spaces")
    return name


def _password_hash(value: str) -> str:
    if not is_password_hash(value):
        # Never repeat the value: it may well be a plain-text password.
        raise ValueError(
            "not a `mailyard auth hash` value ($scrypt$...); plain text is never accepted"
        )
    return value


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    password: Annotated[str, AfterValidator(_password_hash)]
    sender_domains: list[DomainName] | None = Field(None, min_length=1)
    message_class: str | None = Field(None, alias="class", pattern=CLASS_NAME_PATTERN)


_FILE = TypeAdapter(dict[Annotated[str, AfterValidator(_user_name)], _Entry])


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated user. Holds no password hash, so it is safe to log."""

    name: str
    # None: any sender domain. Lower-case A-labels, as the users file holds them.
    sender_domains: frozenset[str] | None = None
    # The class of the user's mail (one of queue.classes); None: the queue decides.
    message_class: str | None = None

    def may_send_from(self, domain: str) -> bool:
        """May this user use ``domain`` in MAIL FROM?

        Exact, case-insensitive match: listing example.com does not allow
        mail.example.com (list it too). A trailing dot is ignored. A domain
        outside ASCII matches no list (the file holds A-labels, and mapping
        U-labels with Python's IDNA 2003 codec could match a different name).
        """
        if self.sender_domains is None:
            return True
        return domain.lower().removesuffix(".") in self.sender_domains


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (PyYAML keeps the last, silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice", key_node.start_mark
            )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's snippet of the line (it could hold a hash)."""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML: {where}{problem}"


def _describe(exc: ValidationError) -> list[str]:
    """One line per problem, naming user and field; the input is never repeated."""
    problems = []
    for error in exc.errors():
        user, *field = error["loc"]
        message = error["msg"].removeprefix("Value error, ")
        if field == ["[key]"]:
            problems.append(f"user {user!r}: {message}")
        elif error["type"] == "extra_forbidden":
            problems.append(f"user {user!r}: unknown key {field[-1]!r}")
        elif not field:
            problems.append(
                f"user {user!r}: must be a mapping with password (and sender_domains, class)"
            )
        else:
            where = ".".join(str(part) for part in field)
            problems.append(f"user {user!r}, {where}: {message}")
    return problems


def _accounts(
    entries: Mapping[str, _Entry], classes: Collection[str]
) -> dict[str, tuple[User, _Hash]]:
    problems = [
        f"user {name!r}, {problem}"
        for name, entry in entries.items()
        if entry.message_class is not None
        for problem in unknown_classes("class", [entry.message_class], classes)
    ]
    if problems:
        raise FileProblem(f"{KEY}: {'; '.join(problems)}")
    accounts = {}
    for name, entry in entries.items():
        stored = _parse_hash(entry.password)
        if stored is None:  # validated above; kept so a bug cannot let a user in
            raise FileProblem(f"{KEY}: user {name!r}, password: not a `mailyard auth hash` value")
        domains = frozenset(entry.sender_domains) if entry.sender_domains is not None else None
        accounts[name] = (User(name, domains, entry.message_class), stored)
    return accounts


def load_users(
    path: Path, classes: Collection[str] = tuple(DEFAULT_CLASSES)
) -> dict[str, tuple[User, _Hash]]:
    """Read and check the users file; :class:`FileProblem` (naming ``KEY``) if it cannot be used.

    ``classes``: ``queue.classes``, which a user's ``class`` must be one of.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"{KEY}: {describe(exc)}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise FileProblem(f"{KEY}: {path}: {_yaml_problem(exc)}") from None
    if data is None:
        raise FileProblem(f"{KEY}: {path} is empty (write {{}} for a file with no users)")
    if not isinstance(data, dict):
        raise FileProblem(f"{KEY}: {path} must be a mapping from user name to its settings")
    try:
        entries = _FILE.validate_python(data)
    except ValidationError as exc:
        raise FileProblem(f"{KEY}: {path}: {'; '.join(_describe(exc))}") from None
    return _accounts(entries, classes)


class _Directory:
    """One version of the users file, and the logins that verified against it.

    Applications often open a connection per message; without the cache each
    would pay a full scrypt. The cache is keyed by an HMAC of login and
    password under a key that never leaves this process, and dies with the
    version it belongs to: a changed password or a removed user counts at once.
    """

    CACHE_SIZE = 1024

    def __init__(self, accounts: dict[str, tuple[User, _Hash]]) -> None:
        self.accounts = accounts
        self._key = os.urandom(32)
        self._verified: OrderedDict[bytes, tuple[User, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.dummy = self._dummy_hash()

    def _dummy_hash(self) -> _Hash:
        # An unknown user costs what a known one does: the most common parameters.
        costs = Counter((h.log_n, h.r, h.p, len(h.digest)) for _, h in self.accounts.values())
        log_n, r, p, size = max(costs, key=costs.__getitem__, default=(LOG_N, 8, 1, HASH_BYTES))
        return _Hash(log_n, r, p, os.urandom(SALT_BYTES), os.urandom(size))

    def cache_key(self, login: bytes, password: bytes) -> bytes:
        framed = len(login).to_bytes(4, "big") + login + password
        return hmac.new(self._key, framed, hashlib.sha256).digest()

    def cached(self, key: bytes, now: float, ttl: float) -> User | None:
        with self._lock:
            hit = self._verified.get(key)
            if hit is None or now - hit[1] >= ttl:
                return None
            self._verified.move_to_end(key)  # least recently used leaves first
            return hit[0]

    def remember(self, key: bytes, user: User, now: float) -> None:
        with self._lock:
            self._verified[key] = (user, now)
            self._verified.move_to_end(key)
            while len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)


class Users:
    """The users file (``ingress.auth.users_file``), re-read when it changes.

    Construction raises :class:`FileProblem` when the file cannot be used; a
    later bad version is logged and the last good one kept (see filewatch).
    :meth:`authenticate` blocks for one scrypt (~50 ms): run it in a thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        classes: Collection[str] = tuple(DEFAULT_CLASSES),
        interval: float = 1.0,
        cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._cache_ttl = cache_ttl  # 0 turns the cache of verified logins off
        known = tuple(classes)
        self._watched = Watched(
            KEY,
            (path,),
            lambda paths: _Directory(load_users(paths[0], known)),
            interval=interval,
            clock=clock,
        )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._watched.value.accounts)

    @property
    def reloads(self) -> int:
        return self._watched.reloads

    def authenticate(self, login: bytes, password: bytes) -> User | None:
        """The user whose credentials these are, or None.

        Every failure costs one scrypt, whether the user is unknown, the
        bytes are not UTF-8 or the password is wrong, so timing does not tell
        which. User names are exact (case-sensitive); passwords are compared
        as sent, without Unicode normalisation.
        """
        directory = self._watched.value
        now = self._clock()
        key = directory.cache_key(login, password)
        if self._cache_ttl > 0:
            hit = directory.cached(key, now, self._cache_ttl)
            if hit is not None:
                return hit
        account = _lookup(directory, login)
        user, stored = account if account is not None else (None, directory.dummy)
        if not _verify(password, stored) or user is None or not _is_utf8(password):
            return None
        if self._cache_ttl > 0:
            directory.remember(key, user, now)
        return user


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _lookup(directory: _Directory, login: bytes) -> tuple[User, _Hash] | None:
    try:
        name = login.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    return directory.accounts.get(name)


# --- failed attempts per client address --------------------------------------


def _client_key(ip: str) -> str:
    """The address in canonical form; ``::ffff:192.0.2.1`` counts as ``192.0.2.1``."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a Unix socket peer): still counted, as given
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class AuthFailures:
    """Failed AUTH attempts per client address in a sliding window.

    An address with ``limit`` failures in the last ``window`` seconds is
    locked out until the oldest of them leaves the window. A success does
    not clear the count: otherwise one valid account would let its holder
    guess other users' passwords without end.

    Memory is bounded: an address is forgotten once all its failures have
    left the window, at most ``limit`` times are kept per address, and past
    ``max_addresses`` the address whose last failure is oldest is dropped.
    Not thread-safe: use it from the event loop.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("limit and max_addresses must be at least 1, window above 0")
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        # Ordered by last failure, oldest first: expiry and eviction pop from the front.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def record_failure(self, ip: str) -> bool:
        """Count one failure; True when the address has now reached the limit."""
        now = self._clock()
        self._expire(now)
        key = _client_key(ip)
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return self._full(times, now)

    def locked_out(self, ip: str) -> bool:
        """True while ``limit`` failures from this address lie within the window."""
        times = self._failures.get(_client_key(ip))
        return times is not None and self._full(times, self._clock())

    def _full(self, times: deque[float], now: float) -> bool:
        return len(times) >= self.limit and now - times[0] < self.window

    def _expire(self, now: float) -> None:
        while self._failures:
            times = next(iter(self._failures.values()))
            if now - times[-1] < self.window:
                return
            self._failures.popitem(last=False)
