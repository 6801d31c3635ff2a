#!/usr/bin/env python3
"""Holds N idle keep-alive connections to a proxy and reports its resident memory.

Each connection sends one valid `POST /v1/conversations` (the request bench/wrk.lua sends,
from the same BENCH_* variables) and reads the whole answer, so the proxy has a finished
HTTP/1.1 keep-alive connection it must keep open. With all N idle, it sums VmRSS over the
given PIDs (for nginx: master and worker) and prints one JSON line.

Usage: idle_conns.py HOST PORT COUNT PID [PID...]
"""

import json
import resource
import socket
import sys
import time

from httpreq import Reader, request


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pids = [int(p) for p in sys.argv[4:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    payload = request(host, port)
    before = sum(vm_rss_kib(p) for p in pids)
    sockets, statuses = [], {}
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(payload)
            status = Reader(sock).response()
            statuses[status] = statuses.get(status, 0) + 1
            sockets.append(sock)
        # Let the proxy settle (timers, buffers) before reading its memory.
        time.sleep(1.0)
        alive = 0
        for sock in sockets:
            # A connection the proxy closed reads as EOF at once; an open one times out.
            sock.settimeout(0.0)
            try:
                alive += 0 if sock.recv(1) == b"" else 1
            except BlockingIOError:
                alive += 1
        held = sum(vm_rss_kib(p) for p in pids)
    finally:
        for sock in sockets:
            sock.close()
    print(
        json.dumps(
            {
                "connections": count,
                "still_open": alive,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "rss_before_kib": before,
                "rss_held_kib": held,
            }
        )
    )


if __name__ == "__main__":
    main()
