"""Authoritative DNS for the stand-in's zones, answered from the records it holds.

The lab's Cloudflare stand-in (``app.State``) also answers DNS, as Cloudflare's
own name servers do for a zone they host: the lab's ACME CA (pebble) validates
DNS-01 challenges by real lookups of ``_acme-challenge.<name>`` TXT records,
and lab nodes resolve ``whoami.lab.test`` to the cluster's A records.

What it answers (UDP and TCP on one port, ``DnsServer(state, host, port)``):

- A, AAAA, CNAME, TXT, MX, NS records of the zone, read from the state under its
  lock at every query (a record written through the API is visible at once);
  TXT content is served without the quotes Cloudflare's API may keep.
- the zone apex's SOA (synthesized, serial from the time of the last change)
  and NS (the zone's ``name_servers``) when no NS record is held;
- a wildcard record (``*.zone``) for names that hold no record of any type,
  as RFC 4592 says;
- NXDOMAIN / NODATA with the SOA in the authority section; REFUSED for names
  outside every zone (it is not a resolver); FORMERR for garbage.

Everything is authoritative (AA set), TTL 60 for "automatic" (ttl 1) records.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

AUTO_TTL = 60  # what "automatic" (ttl 1) becomes on the wire
SERVED = {"A", "AAAA", "CNAME", "TXT", "MX", "NS"}


def _txt_wire(content: str) -> str:
    """Cloudflare keeps TXT content with or without quotes; the wire form is quoted chunks."""
    text = content
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join(f'"{c}"' for c in chunks)


class Zones:
    """Read-only view of ``app.State`` for lookups (takes the state's lock)."""

    def __init__(self, state):
        self.state = state

    def zone_for(self, qname: str) -> dict | None:
        best = None
        with self.state.lock:
            for zone in self.state.zones.values():
                zname = zone["name"]
                if (qname == zname or qname.endswith("." + zname)) and (
                        best is None or len(zname) > len(best["name"])):
                    best = zone
        return best

    def records(self, zone: dict, name: str) -> list[dict]:
        with self.state.lock:
            return [dict(r) for r in self.state.records.get(zone["id"], {}).values()
                    if r["name"] == name]

    def any_below(self, zone: dict, name: str) -> bool:
        """Whether ``name`` exists as an empty non-terminal (a record sits below it)."""
        suffix = "." + name
        with self.state.lock:
            return any(r["name"].endswith(suffix)
                       for r in self.state.records.get(zone["id"], {}).values())

    def serial(self, zone: dict) -> int:
        with self.state.lock:
            stamps = [r.get("modified_on", "") for r in self.state.records.get(zone["id"], {}).values()]
        latest = max(stamps, default="")
        digits = "".join(ch for ch in latest if ch.isdigit())[:14]  # YYYYmmddHHMMSS
        return int(digits[2:12]) if len(digits) >= 12 else 1  # fits 32 bits


def _rrset(owner: str, rtype: str, items: list[tuple[int, str]]) -> dns.rrset.RRset:
    rdtype = dns.rdatatype.from_text(rtype)
    rrset = dns.rrset.RRset(dns.name.from_text(owner), dns.rdataclass.IN, rdtype)
    for ttl, text in items:
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text), ttl)
    return rrset


def _wire_content(rec: dict) -> str:
    rtype, content = rec["type"], rec["content"]
    if rtype == "TXT":
        return _txt_wire(content)
    if rtype in ("CNAME", "NS"):
        return content.rstrip(".") + "."
    if rtype == "MX":
        return f"{rec.get('priority', 10)} {content.rstrip('.')}."
    return content


def _soa(zone: dict, serial: int) -> dns.rrset.RRset:
    ns = (zone.get("name_servers") or ["ns.invalid"])[0]
    text = f"{ns}. dns.cloudflare.com. {serial} 10000 2400 604800 {AUTO_TTL}"
    return _rrset(zone["name"] + ".", "SOA", [(AUTO_TTL, text)])


def answer(zones: Zones, wire: bytes) -> bytes | None:
    """The response to one DNS query in wire format (None: not even a header to answer)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.message.ShortHeader:
        return None
    except Exception:  # noqa: BLE001 - any malformed message gets FORMERR
        if len(wire) < 12:
            return None
        qid = struct.unpack("!H", wire[:2])[0]
        resp = dns.message.Message(id=qid)
        resp.flags = dns.flags.QR
        resp.set_rcode(dns.rcode.FORMERR)
        return resp.to_wire()
    resp = dns.message.make_response(query)
    resp.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        resp.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
        return resp.to_wire()
    question = query.question[0]
    qname = question.name.to_text(omit_final_dot=True).lower()
    qtype = dns.rdatatype.to_text(question.rdtype)
    zone = zones.zone_for(qname)
    if zone is None or question.rdclass != dns.rdataclass.IN:
        resp.set_rcode(dns.rcode.REFUSED)
        return resp.to_wire()
    resp.flags |= dns.flags.AA
    owner = question.name.to_text().lower()
    if not owner.endswith("."):
        owner += "."
    serial = zones.serial(zone)
    held = zones.records(zone, qname)
    exists = bool(held) or qname == zone["name"] or zones.any_below(zone, qname)
    if not exists:
        # RFC 4592: *.<parent> stands for names that do not exist at all.
        parent = qname.split(".", 1)[1] if "." in qname else ""
        if parent and (parent == zone["name"] or parent.endswith("." + zone["name"])):
            held = zones.records(zone, "*." + parent)
            exists = bool(held)
    if not exists:
        resp.set_rcode(dns.rcode.NXDOMAIN)
        resp.authority.append(_soa(zone, serial))
        return resp.to_wire()
    served = [r for r in held if r["type"] in SERVED]
    cname = [r for r in served if r["type"] == "CNAME"]
    if qname == zone["name"] and qtype == "SOA":
        resp.answer.append(_soa(zone, serial))
    elif qname == zone["name"] and qtype == "NS" and not any(r["type"] == "NS" for r in served):
        resp.answer.append(_rrset(owner, "NS", [(AUTO_TTL, n + ".")
                                                for n in zone.get("name_servers") or []]))
    elif cname and qtype != "CNAME":
        rec = cname[0]
        resp.answer.append(_rrset(owner, "CNAME", [(_ttl(rec), _wire_content(rec))]))
    else:
        wanted = [r for r in served if qtype == "ANY" or r["type"] == qtype]
        by_type: dict[str, list[tuple[int, str]]] = {}
        for rec in wanted:
            by_type.setdefault(rec["type"], []).append((_ttl(rec), _wire_content(rec)))
        for rtype, items in sorted(by_type.items()):
            resp.answer.append(_rrset(owner, rtype, items))
    if not resp.answer:
        resp.authority.append(_soa(zone, serial))
    return resp.to_wire()


def _ttl(rec: dict) -> int:
    ttl = int(rec.get("ttl") or 1)
    return AUTO_TTL if ttl == 1 else ttl


class _Udp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """UDP and TCP on one ``host:port`` (port 0: one the OS picks, free for both)."""

    def __init__(self, state, host: str = "127.0.0.1", port: int = 0):
        self.zones = Zones(state)
        self.host, self.port = host, port
        self.queries = 0
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def _handlers(self):
        outer = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                outer.queries += 1
                out = answer(outer.zones, data)
                if out is None:
                    return
                if len(out) > 512:  # classic UDP limit: truncate, the client retries over TCP
                    msg = dns.message.from_wire(out)
                    msg.answer.clear()
                    msg.authority.clear()
                    msg.flags |= dns.flags.TC
                    out = msg.to_wire()
                sock.sendto(out, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(10)
                while True:
                    head = _recv_exact(self.request, 2)
                    if head is None:
                        return
                    data = _recv_exact(self.request, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    outer.queries += 1
                    out = answer(outer.zones, data)
                    if out is None:
                        return
                    self.request.sendall(struct.pack("!H", len(out)) + out)

        return UdpHandler, TcpHandler

    def start(self) -> DnsServer:
        udp_handler, tcp_handler = self._handlers()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            _Udp.address_family = family
            _Tcp.address_family = family
            udp = _Udp((self.host, self.port), udp_handler)
            port = udp.server_address[1]
            try:
                tcp = _Tcp((self.host, port), tcp_handler)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue  # the OS gave a UDP port whose TCP twin is taken: try another
            self.port = port
            self._servers = [udp, tcp]
            break
        else:
            raise OSError(f"no free port for DNS on {self.host} (UDP and TCP)")
        for srv in self._servers:
            thread = threading.Thread(target=srv.serve_forever, daemon=True,
                                      name=f"dns-{type(srv).__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers.clear()


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf
