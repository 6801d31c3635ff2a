"""The benchmark request, as raw HTTP/1.1, and a reader for one answer.

Shared by bench/idle_conns.py and bench/callgrind_client.py; the request is the one
bench/wrk.lua sends, built from the same BENCH_* variables (bench/lib.sh sets them).
"""

import os


def request(host, port, invalid=False):
    """`POST /v1/conversations` (or BENCH_PATH) with the valid (or the invalid) body."""
    body = os.environ["BENCH_BODY_INVALID" if invalid else "BENCH_BODY_VALID"].encode()
    path = os.environ.get("BENCH_PATH", "/v1/conversations")
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Authorization: Bearer {os.environ['BENCH_TOKEN']}\r\n"
        f"X-Tenant: {os.environ['BENCH_TENANT']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Reader:
    """Reads whole responses (Content-Length bodies only) from one connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def response(self):
        """Returns the status code of the next response, consuming it."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding":
                raise ValueError("chunked answers are not expected here")
        while len(self.buffer) < length:
            self._fill()
        self.buffer = self.buffer[length:]
        return status
