"""The DNS wire format, just enough for the exfiltration probe: one question out, the header of
the answer back. Pure functions, stdlib only."""
from __future__ import annotations

import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
FLAG_QR = 0x8000   # this message is a response
FLAG_RD = 0x0100   # recursion desired: what an exfiltrating client would ask for
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
HEADER = struct.Struct("!HHHHHH")


class DnsWireError(ValueError):
    """A name that cannot be sent, or bytes that are no DNS response to our query."""


@dataclass(frozen=True)
class DnsReply:
    rcode: int
    answers: int

    @property
    def rcode_name(self) -> str:
        return RCODES.get(self.rcode, f"RCODE{self.rcode}")


def encode_name(name: str) -> bytes:
    labels = name.rstrip(".").split(".")
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii", errors="strict") if label.isascii() else b""
        if not raw or len(raw) > 63:
            raise DnsWireError(f"DNS name {name!r}: every label must be 1-63 ASCII characters")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise DnsWireError(f"DNS name {name!r} is longer than 255 bytes on the wire")
    return bytes(out)


def build_query(name: str, query_id: int, qtype: int = TYPE_A) -> bytes:
    if not 0 <= query_id <= 0xFFFF:
        raise DnsWireError(f"query id {query_id} is not a 16-bit number")
    return (HEADER.pack(query_id, FLAG_RD, 1, 0, 0, 0) + encode_name(name)
            + struct.pack("!HH", qtype, CLASS_IN))


def parse_reply(data: bytes, query_id: int) -> DnsReply:
    """The header of a response to query `query_id`; DnsWireError for anything else."""
    if len(data) < HEADER.size:
        raise DnsWireError(f"{len(data)} bytes: shorter than a DNS header")
    ident, flags, _qd, ancount, _ns, _ar = HEADER.unpack_from(data)
    if not flags & FLAG_QR:
        raise DnsWireError("a DNS query, not a response")
    if ident != query_id:
        raise DnsWireError(f"response to query id {ident}, not ours ({query_id})")
    return DnsReply(rcode=flags & 0x000F, answers=ancount)


def tcp_frame(message: bytes) -> bytes:
    """DNS over TCP: each message preceded by its length (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(message)) + message

