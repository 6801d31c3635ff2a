#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into the results table and JSON.

Usage: report.py RAW_JSONL META_JSON OUT_JSON

RAW_JSONL has one line per measured wrk run: scenario, target, round, the wrk summary
(`BENCH_RESULT` from bench/wrk.lua) and the proxy's CPU ticks (utime + stime summed over
its processes, from /proc/PID/stat) during that run. META_JSON holds the settings and the
RSS figures. The table gives, per scenario and target, the median over rounds and the
spread (min-max), and each median as a ratio to nginx's in the same scenario.
"""

import json
import statistics
import sys

NGINX = "nginx"
# Table order; report.py prints the targets a run measured, in this order.
TARGETS = ("upstream", "nginx", "schemagate", "schemagate-cores", "hyper-floor", "relay-floor")
PEERS = ("nginx-lua", "fastify", "express-openapi", "prism")


def spread(values):
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def summarise(runs):
    """Per-round figures, then median and spread per figure."""
    per_round = {"rps": [], "p50_us": [], "p99_us": [], "cpu_us_per_req": [], "machine_busy": []}
    non_2xx, requests, errors = 0, 0, 0
    for run in runs:
        wrk = run["wrk"]
        seconds = wrk["duration_us"] / 1e6
        per_round["rps"].append(wrk["requests"] / seconds)
        per_round["p50_us"].append(wrk["p50_us"])
        per_round["p99_us"].append(wrk["p99_us"])
        cpu_s = run["cpu_ticks"] / run["clk_tck"]
        per_round["cpu_us_per_req"].append(cpu_s * 1e6 / max(wrk["requests"], 1))
        per_round["machine_busy"].append(run.get("machine_busy", float("nan")))
        non_2xx += wrk["non_2xx"]
        requests += wrk["requests"]
        errors += (
            wrk["connect_errors"]
            + wrk["read_errors"]
            + wrk["write_errors"]
            + wrk["timeouts"]
        )
    out = {k: spread(v) for k, v in per_round.items()}
    out["requests"] = requests
    out["non_2xx"] = non_2xx
    out["socket_errors"] = errors
    return out


def fmt_spread(s, digits=0):
    median, lo, hi = s["median"], s["min"], s["max"]
    if digits == 0:
        return f"{median:,.0f} ({lo:,.0f}–{hi:,.0f})"
    return f"{median:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratio(value, reference):
    return value / reference if reference else float("nan")


def answers(meta, target):
    """What a validating target answered in the preflight, e.g. `401 / 422`."""
    a = meta.get("answers", {}).get(target)
    if not a:
        return "-"
    return f"{a['no_bearer']} / {a['invalid']}"


def print_peers(meta, valid):
    """The issue's table: each validating proxy beside nginx, cheapest first."""
    shown = [t for t in (NGINX, "schemagate") + PEERS if t in valid]
    if not any(t in valid for t in PEERS):
        return
    shown.sort(key=lambda t: valid[t]["cpu_us_per_req"]["median"])
    print()
    print("Validating peers, scenario `valid`, one worker each (ratios against nginx in this run):")
    print()
    print(
        "| proxy | what it checks | no bearer / invalid body | CPU µs/request "
        "| × nginx | requests/s |"
    )
    print("|---|---|---|---|---|---|")
    for target in shown:
        s = valid[target]
        r = s.get("vs_nginx", {}).get("cpu_us_per_req", float("nan"))
        print(
            f"| {meta['labels'][target]} | {meta.get('checks', {}).get(target, '-')} "
            f"| {answers(meta, target)} | {fmt_spread(s['cpu_us_per_req'], 1)} "
            f"| {r:.2f} | {fmt_spread(s['rps'])} |"
        )


def main():
    raw_path, meta_path, out_path = sys.argv[1:4]
    with open(raw_path) as f:
        raw = [json.loads(line) for line in f if line.strip()]
    with open(meta_path) as f:
        meta = json.load(f)

    scenarios = {}
    for run in raw:
        scenarios.setdefault(run["scenario"], {}).setdefault(run["target"], []).append(run)

    results = {}
    for scenario, targets in scenarios.items():
        results[scenario] = {t: summarise(runs) for t, runs in targets.items()}
        ref = results[scenario].get(NGINX)
        for target, s in results[scenario].items():
            if ref is None:
                continue
            s["vs_nginx"] = {
                k: ratio(s[k]["median"], ref[k]["median"])
                for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req")
            }

    # Rejection versus forwarding: the mixed scenario's CPU per request is a blend of the two;
    # with the forwarded cost taken from the all-valid scenario, the rejected cost follows.
    verdict = None
    valid = results.get("valid", {}).get("schemagate")
    mixed = results.get("mixed", {}).get("schemagate")
    if valid and mixed and mixed["requests"]:
        share = mixed["non_2xx"] / mixed["requests"]
        forward = valid["cpu_us_per_req"]["median"]
        blend = mixed["cpu_us_per_req"]["median"]
        rejected = (blend - (1 - share) * forward) / share if share else float("nan")
        verdict = {
            "invalid_share": share,
            "cpu_us_per_forwarded": forward,
            "cpu_us_per_mixed": blend,
            "cpu_us_per_rejected_derived": rejected,
            "rejected_over_forwarded": rejected / forward if forward else float("nan"),
            "rejection_cheaper": rejected < forward,
        }

    # Throughput with a worker per core against one worker (target: at least 1.7).
    cores = results.get("cores", {})
    scaling = None
    if "schemagate" in cores and "schemagate-cores" in cores:
        one = cores["schemagate"]["rps"]["median"]
        every = cores["schemagate-cores"]["rps"]["median"]
        scaling = {
            "one_worker_rps": one,
            "default_runtime_rps": every,
            "ratio": every / one,
            "machine_busy_one_worker": cores["schemagate"]["machine_busy"]["median"],
            "machine_busy_default_runtime": cores["schemagate-cores"]["machine_busy"]["median"],
        }

    document = {"meta": meta, "results": results, "rejection": verdict, "cores": scaling}
    with open(out_path, "w") as f:
        json.dump(document, f, indent=2)

    print()
    print(
        f"{meta['date']}  commit {meta['commit']}  {meta['cpus']} CPUs  "
        f"wrk -t{meta['wrk_threads']} -c{meta['connections']} -d{meta['duration_s']}s "
        f"(warm-up {meta['warmup_s']}s), {meta['rounds']} interleaved rounds; "
        f"schemagate TOKIO_WORKER_THREADS={meta['gateway_threads']}, "
        f"RUST_LOG={meta['rust_log']}; nginx worker_processes 1"
    )
    load = meta.get("load_average")
    if load:
        print(f"load average (1, 5, 15 min) at the start: {load['start']}, at the end: {load['end']}")
    for scenario, targets in results.items():
        print()
        print(f"Scenario `{scenario}`: {meta['scenarios'][scenario]}")
        print()
        print(
            "| target | requests/s | p50 µs | p99 µs | non-2xx | proxy CPU µs/req "
            "| ×nginx rps | ×nginx p50 | ×nginx p99 | ×nginx CPU |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for target in TARGETS + PEERS:
            s = targets.get(target)
            if s is None:
                continue
            r = s.get("vs_nginx", {})
            cpu = fmt_spread(s["cpu_us_per_req"], 1)
            print(
                f"| {meta['labels'][target]} | {fmt_spread(s['rps'])} "
                f"| {fmt_spread(s['p50_us'])} | {fmt_spread(s['p99_us'])} "
                f"| {s['non_2xx']:,} of {s['requests']:,} | {cpu} "
                f"| {r.get('rps', float('nan')):.2f} | {r.get('p50_us', float('nan')):.2f} "
                f"| {r.get('p99_us', float('nan')):.2f} "
                f"| {r.get('cpu_us_per_req', float('nan')):.2f} |"
            )
    print_peers(meta, results.get("valid", {}))
    if verdict:
        print()
        print(
            f"Rejection vs forwarding (schemagate): {verdict['invalid_share']:.0%} invalid; "
            f"forwarded {verdict['cpu_us_per_forwarded']:.1f} µs CPU/req, "
            f"rejected (derived) {verdict['cpu_us_per_rejected_derived']:.1f} µs CPU/req "
            f"(×{verdict['rejected_over_forwarded']:.2f}): "
            + ("rejection is cheaper" if verdict["rejection_cheaper"] else "REJECTION COSTS MORE")
        )
    if scaling:
        print()
        print(
            f"Both cores (tokio's default runtime) against one worker: "
            f"{scaling['default_runtime_rps']:,.0f} against {scaling['one_worker_rps']:,.0f} "
            f"requests/s, ×{scaling['ratio']:.2f} (target ≥ 1.7); both cores "
            f"{scaling['machine_busy_default_runtime']:.0%} busy during the runs with a worker "
            f"per core, {scaling['machine_busy_one_worker']:.0%} with one worker"
        )
    rss = meta.get("rss", {})
    if rss:
        print()
        idle = next(iter(rss.values()))["idle"]["connections"]
        print(
            f"| process | RSS after load | RSS holding {idle:,} idle keep-alive connections "
            f"| per idle connection |"
        )
        print("|---|---|---|---|")
        for target in ("nginx", "schemagate"):
            r = rss.get(target)
            if not r:
                continue
            held = r["idle"]
            per = (held["rss_held_kib"] - held["rss_before_kib"]) / max(held["still_open"], 1)
            print(
                f"| {meta['labels'][target]} | {r['after_load_kib'] / 1024:.1f} MiB "
                f"| {held['rss_held_kib'] / 1024:.1f} MiB "
                f"({held['still_open']:,} of {held['connections']:,} still open) "
                f"| {per:.1f} KiB |"
            )
    print()
    print(f"JSON: {out_path}")


if __name__ == "__main__":
    main()
