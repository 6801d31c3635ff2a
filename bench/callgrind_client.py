#!/usr/bin/env python3
"""Counts a server's instructions per request under callgrind (see BENCHMARKING.md).

On one keep-alive connection: sends WARMUP requests, then REPEATS times: zeroes the
counters (`callgrind_control -z`), sends COUNT requests, dumps (`callgrind_control -d`) and
reads the dump's total instructions (Ir). Every answer must have the expected status.
Prints one JSON line with the Ir per request of each repeat and their median.

Usage: callgrind_client.py HOST PORT PID DUMP_PREFIX [--invalid] [--warmup N] [--count N]
       [--repeats N]
"""

import argparse
import glob
import json
import os
import socket
import statistics
import subprocess
import time

from httpreq import Reader, request


def control(flag, pid):
    subprocess.run(
        ["callgrind_control", flag, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def dumps(prefix):
    return set(glob.glob(glob.escape(prefix) + "*"))


def total_ir(path):
    totals = None
    with open(path) as dump:
        for line in dump:
            if line.startswith("summary:"):
                return int(line.split()[1])
            if line.startswith("totals:"):
                totals = int(line.split()[1])
    if totals is None:
        raise ValueError(f"no totals in {path}")
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int)
    parser.add_argument("prefix")
    parser.add_argument("--invalid", action="store_true")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    expected = 422 if args.invalid else 200

    payload = request(args.host, args.port, invalid=args.invalid)
    sock = socket.create_connection((args.host, args.port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = Reader(sock)

    def send(n):
        for _ in range(n):
            sock.sendall(payload)
            status = reader.response()
            if status != expected:
                raise SystemExit(f"expected {expected}, got {status}")

    send(args.warmup)
    per_request, files = [], []
    for _ in range(args.repeats):
        control("-z", args.pid)
        send(args.count)
        seen = dumps(args.prefix)
        control("-d", args.pid)
        # The dump is written by the server process; wait for the new file to be complete.
        new = set()
        for _ in range(600):
            new = dumps(args.prefix) - seen
            if new:
                break
            time.sleep(0.1)
        if not new:
            raise SystemExit("callgrind wrote no dump")
        path = max(new, key=os.path.getmtime)
        ir = None
        for _ in range(100):
            try:
                ir = total_ir(path)
                break
            except (ValueError, OSError):
                time.sleep(0.1)
        if ir is None:
            raise SystemExit(f"cannot read {path}")
        per_request.append(ir / args.count)
        files.append(path)
    sock.close()
    print(
        json.dumps(
            {
                "count": args.count,
                "warmup": args.warmup,
                "status": expected,
                "ir_per_request": per_request,
                "median": statistics.median(per_request),
                "dumps": files,
            }
        )
    )


if __name__ == "__main__":
    main()
