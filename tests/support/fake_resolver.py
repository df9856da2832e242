"""A fake upstream DNS resolver for tests, stdlib only and independent of the code under test:
answers every query over UDP and TCP on one address (an A record 192.0.2.1, TEST-NET-1, for A
questions; an empty NOERROR for others) and records each question name it is asked.

In-process: `with FakeResolver("127.0.0.1") as r: ... r.names`. As a process (e.g. inside a
network namespace a test made): `python -m tests.support.fake_resolver HOST PORT RECORD_FILE`
appends each name to RECORD_FILE, prints "ready PORT" once listening, and runs until SIGTERM."""
from __future__ import annotations

import selectors
import signal
import socket
import struct
import sys
import threading
from pathlib import Path

ANSWER_ADDRESS = bytes([192, 0, 2, 1])


def parse_question(query: bytes) -> tuple[int, str, int, bytes]:
    """(id, name, qtype, raw question section) of a query; ValueError when it is none."""
    if len(query) < 12:
        raise ValueError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack_from("!HHH", query)
    if flags & 0x8000 or qdcount != 1:
        raise ValueError("not a query with one question")
    labels, pos = [], 12
    while True:
        length = query[pos]
        pos += 1
        if length == 0:
            break
        if length > 63:
            raise ValueError("compressed or malformed name")
        labels.append(query[pos:pos + length].decode("ascii"))
        pos += length
    qtype, _qclass = struct.unpack_from("!HH", query, pos)
    return ident, ".".join(labels), qtype, query[12:pos + 4]


def answer(query: bytes) -> tuple[str, bytes]:
    """(question name, response) for one query."""
    ident, name, qtype, question = parse_question(query)
    records = b""
    if qtype == 1:
        # the name by pointer to the question (offset 12), type A, class IN, TTL 0, 4 bytes
        records = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + ANSWER_ADDRESS
    flags = 0x8000 | 0x0100 | 0x0080  # response, recursion desired and available, NOERROR
    header = struct.pack("!HHHHHH", ident, flags, 1, 1 if records else 0, 0, 0)
    return name, header + question + records


class FakeResolver:
    def __init__(self, host: str, port: int = 0, record: Path | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # UDP and TCP on one port: with port 0 the free UDP port may be taken for TCP; try again
        for attempt in range(1 if port else 20):
            self.udp = socket.socket(family, socket.SOCK_DGRAM)
            self.udp.bind((host, port))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(family, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
                if port or attempt == 19:
                    raise
        self.tcp.listen(16)
        self.record = record
        self.names: list[str] = []
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self.serve, name="fake-resolver")

    def _note(self, name: str) -> None:
        with self._lock:
            self.names.append(name)
        if self.record is not None:
            with open(self.record, "a") as f:
                f.write(name + "\n")

    def _tcp_client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                size = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))[0]
                name, response = answer(conn.recv(size, socket.MSG_WAITALL))
            except (OSError, ValueError, struct.error, IndexError):
                return
            self._note(name)
            conn.sendall(struct.pack("!H", len(response)) + response)

    def serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            for sock in (self.udp, self.tcp, self._stop_r):
                sel.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._stop_r:
                        return
                    if key.fileobj is self.udp:
                        data, peer = self.udp.recvfrom(4096)
                        try:
                            name, response = answer(data)
                        except (ValueError, struct.error, IndexError):
                            continue
                        self._note(name)
                        self.udp.sendto(response, peer)
                    else:
                        conn, _ = self.tcp.accept()
                        self._tcp_client(conn)  # one short query at a time is enough here

    def __enter__(self) -> "FakeResolver":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join()
        for sock in (self.udp, self.tcp, self._stop_r, self._stop_w):
            sock.close()

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str]) -> int:
    host, port, record = argv[0], int(argv[1]), Path(argv[2])
    resolver = FakeResolver(host, port, record)
    signal.signal(signal.SIGTERM, lambda *_: resolver._stop_w.send(b"x"))
    print(f"ready {resolver.port}", flush=True)
    resolver.serve()
    for sock in (resolver.udp, resolver.tcp):
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
