#!/usr/bin/env python3
"""Interleaved A/B of two agent binaries on the same machine: `bench/ab.py OLD_AGENT NEW_AGENT`.

A VM's speed drifts by tens of percent between days, so a figure recorded yesterday cannot judge
today's build. This runs the main end-to-end rows of bench/run.py (10 routes, forensic `log`
action) for both binaries alternately, ROUNDS times (default 3; the order flips each round), and
prints each run and the mean per row. Build both with fat LTO (`--profile dist`) first; the load
generator is this tree's target/dist/hooker-load. BENCH_SECONDS sets each run's length.
"""

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

spec = importlib.util.spec_from_file_location("run", Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)

ROWS = [
    ("HTTP, 64 connections", lambda a: f"http://127.0.0.1:{a.http}", {"connections": 64}, run.EVENT, 2),
    ("gRPC stream, batch 100", lambda a: f"grpc://127.0.0.1:{a.grpc}", {"batch": 100}, run.EVENT, 2),
    ("Unix socket, 64 connections", lambda a: f"unix:{a.socket}", {"connections": 64}, run.EVENT, 2),
    ("HTTP intake only", lambda a: f"http://127.0.0.1:{a.http}", {"connections": 64}, run.MISS, 0),
    ("gRPC intake only", lambda a: f"grpc://127.0.0.1:{a.grpc}", {"batch": 100}, run.MISS, 0),
]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench/ab.py OLD_AGENT NEW_AGENT")
    agents = [("old", Path(sys.argv[1])), ("new", Path(sys.argv[2]))]
    for _, path in agents:
        if not path.is_file():
            sys.exit(f"no agent binary at {path}")
    rounds = int(os.environ.get("ROUNDS", "3"))
    work = tempfile.mkdtemp(prefix="hooker-ab-")
    figures = {}
    for round_ in range(rounds):
        for name, path in agents if round_ % 2 == 0 else agents[::-1]:
            run.AGENT = path
            for label, target, extra, event, expect in ROWS:
                agent = run.Agent("routes-10", work)
                agent.start()
                result = run.load(agent, target(agent), f"{name}: {label}", expect, event=event, **extra)
                agent.stop()
                rate = result.get("accepted_per_s")
                if rate is None:
                    sys.exit(f"{name} {label} failed: {result.get('error', '')}")
                figures.setdefault(label, {}).setdefault(name, []).append(rate)
                print(f"round {round_} {name:3} {label}: {rate:,.0f}/s", flush=True)
    print(f"\n| run (mean of {rounds}; events/s) | old | new | |\n|---|---:|---:|---|")
    for label, by_name in figures.items():
        old = sum(by_name["old"]) / len(by_name["old"])
        new = sum(by_name["new"]) / len(by_name["new"])
        print(f"| {label} | {old:,.0f} | {new:,.0f} | {100 * (new - old) / old:+.1f} % |")


if __name__ == "__main__":
    main()
