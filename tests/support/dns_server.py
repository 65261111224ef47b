"""A real DNS server on loopback for tests: authoritative for test zones.

dnspython does the wire format and zone parsing; this is only the loop that
answers UDP and TCP queries from a zone, the way an authoritative server
does (NXDOMAIN with the SOA, NOERROR/NODATA, CNAME chasing inside the zone),
plus two faults a test can turn on: SERVFAIL and silence (a timeout).

It can also stand in for a DNSSEC-validating resolver: answers about the
names a test has ``sign``-ed carry the AD bit, as a validating resolver sets
it for data whose signatures it checked. No signatures are made: what
delivery relies on is the AD bit of its trusted resolver, and that is what
this server controls.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections import Counter

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone


class TestDnsServer:
    def __init__(self, zone_text: str, origin: str = "test.", host: str = "127.0.0.1") -> None:
        self.zone = dns.zone.from_text(zone_text, origin=origin, relativize=False)
        self.origin = dns.name.from_text(origin)
        self.host = host
        self.servfail: set[dns.name.Name] = set()
        self.silent: set[dns.name.Name] = set()
        self.signed: set[dns.name.Name] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        # UDP and TCP on the same port: retry until a port is free for both.
        for _ in range(50):
            self._udp = socketserver.ThreadingUDPServer((host, 0), self._udp_handler())
            port = self._udp.server_address[1]
            try:
                self._tcp = socketserver.ThreadingTCPServer((host, port), self._tcp_handler())
                break
            except OSError:
                self._udp.server_close()
        else:
            raise OSError("no port free for both UDP and TCP")
        self.port = port
        self._threads = [
            threading.Thread(target=server.serve_forever, daemon=True)
            for server in (self._udp, self._tcp)
        ]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TestDnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    def fail(self, name: str) -> None:
        """Answer SERVFAIL for ``name`` and everything below it."""
        self.servfail.add(dns.name.from_text(name))

    def ignore(self, name: str) -> None:
        """Never answer queries for ``name`` and below: the client times out."""
        self.silent.add(dns.name.from_text(name))

    def sign(self, *names: str) -> None:
        """Answer for these names (each exactly, not what is below it) with AD, as a
        validating resolver does for a signed zone: their records, NODATA and NXDOMAIN.
        A CNAME chain is authenticated only when every name in it is signed; AD is
        set only when the query asked for it (AD or DO, RFC 6840 §5.7)."""
        with self._lock:
            self.signed.update(dns.name.from_text(name, origin=self.origin) for name in names)

    def add(self, name: str, rdtype: str, text: str, ttl: int = 60) -> None:
        """Serve one more record from now on, e.g. ``add("s1._domainkey.sender.test.",
        "TXT", '"v=DKIM1; k=ed25519; p=..."')``; a relative ``name`` is below the origin."""
        owner = dns.name.from_text(name, origin=self.origin)
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rdtype, text, origin=self.origin, relativize=False
        )
        with self._lock:
            node = self.zone.find_node(owner, create=True)
            rdataset = node.find_rdataset(dns.rdataclass.IN, rdata.rdtype, create=True)
            rdataset.add(rdata, ttl)

    def replace(self, name: str, rdtype: str, text: str, ttl: int = 60) -> None:
        """Serve this record instead of every ``rdtype`` record ``name`` had."""
        owner = dns.name.from_text(name, origin=self.origin)
        with self._lock:
            node = self.zone.find_node(owner, create=True)
            node.delete_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        self.add(name, rdtype, text, ttl)

    def query_count(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.queries[(name.rstrip(".").lower(), rdtype)]

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            self.queries[
                (qname.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(qtype))
            ] += 1
        if any(qname.is_subdomain(name) for name in self.silent):
            return None
        if any(qname.is_subdomain(name) for name in self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if not qname.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        self._resolve(response, qname, qtype, depth=0)
        asked = query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO
        owners = {qname, *(rrset.name for rrset in response.answer)}
        with self._lock:
            if asked and owners <= self.signed:
                response.flags |= dns.flags.AD
        return response.to_wire()

    def _resolve(
        self, response: dns.message.Message, qname: dns.name.Name, qtype: int, depth: int
    ) -> None:
        node = self.zone.get_node(qname)
        if node is None:
            if not qname.is_subdomain(self.origin) or depth > 8:
                return
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response)
            return
        rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
        if rdataset is not None:
            response.answer.append(dns.rrset.from_rdata_list(qname, rdataset.ttl, list(rdataset)))
            return
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is not None and qtype != dns.rdatatype.CNAME:
            response.answer.append(dns.rrset.from_rdata_list(qname, cname.ttl, list(cname)))
            target = next(iter(cname)).target
            if target.is_subdomain(self.origin):
                self._resolve(response, target, qtype, depth + 1)
            return
        self._add_soa(response)  # NOERROR, no data

    def _add_soa(self, response: dns.message.Message) -> None:
        soa = self.zone.get_rdataset(self.origin, dns.rdatatype.SOA)
        if soa is not None:
            response.authority.append(dns.rrset.from_rdata_list(self.origin, soa.ttl, list(soa)))

    def _udp_handler(self) -> type[socketserver.BaseRequestHandler]:
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        return Handler

    def _tcp_handler(self) -> type[socketserver.BaseRequestHandler]:
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                header = conn.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = conn.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data)
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

        return Handler


TEST_ZONE = """
$TTL 60
@           SOA   ns.test. hostmaster.test. 1 3600 600 86400 60
@           NS    ns.test.
ns          A     127.0.0.1
; alpha: one MX
alpha       MX    10 mx.alpha
mx.alpha    A     127.0.0.2
; beta: two MX; the preferred one may be down
beta        MX    10 mx1.beta
beta        MX    20 mx2.beta
mx1.beta    A     127.0.0.3
mx2.beta    A     127.0.0.4
; gamma: no MX, only an address (implicit MX)
gamma       A     127.0.0.5
; sender: where envelope senders live, so DSNs come here
sender      MX    10 mx.sender
mx.sender   A     127.0.0.6
; bounces: a local domain; has an MX so that relaying it anywhere would show
bounces     MX    10 mx.bounces
mx.bounces  A     127.0.0.7
; null MX (RFC 7505)
nullmx      MX    0 .
; an alias whose MX is alpha's
alias       CNAME alpha
; answers that may only be kept for one second
shortttl    1 MX  10 mx.alpha
; MX hosts where no mail server may be: metadata, a private network, ourselves
metadata    MX    10 mx.metadata
mx.metadata A     169.254.169.254
private     MX    10 mx.private
private     MX    20 mx.alpha
mx.private  A     10.1.2.3
loop        MX    10 mx.mailyard
mx.mailyard A     127.0.0.9
; nxdomain.test: not in the zone; servfail.test, timeout.test: see conftest.py
"""
