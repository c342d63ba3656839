#!/usr/bin/env python3
"""Runs Hooker's whole benchmark harness and writes bench/results/latest.md.

Called by bench/run.sh after the dist build. Steps:
  1. the router micro-benchmark (criterion) — parse, convert, each route, bound, naive, router;
  2. resource figures: binary size, start-up time to ready, idle RSS;
  3. end-to-end load over each intake (max rate and fixed rate) with the forensic `log` action,
     on the 10-route set and the 100-route set, reading the agent's CPU and RSS from /proc, and
     the load generator's own CPU (it shares the machine); plus the intake-only ceiling (an
     event no route matches) over HTTP and gRPC.

Environment: BENCH_SECONDS (load duration per run, default 10), BENCH_SKIP_CRITERION=1,
BENCH_SOAK_SECONDS (length of the fixed-rate soak that samples RSS, default 120; 600 for the
10-minute soak), BENCH_SOAK_RATE (default 1000 events/s), BENCH_ONLY_CONFIGS=1 (only the config
rows of step 4), BENCH_TRACEE_EVENTS (events the fake Tracee streams, default 20000),
BENCH_CONFIG_ROUNDS (default 1: with n > 1, step 4 also runs the native, default, helpers and
inline rows n more times interleaved, each ratio against the native row of its own round, and
reports each row's ratio per round and their mean: a VM's speed drifts within minutes).

Step 4, configs as users write them (issue 20), each over HTTP with 32 connections at max rate and
stated as a ratio to the native-path row (routes-10, built-in raw JSON template) of the same run:
the embedded default config, Postee-style `data.hooker.lib.*` routes to the built-in Slack, Jira
and text templates, an inline `result := input` template, a ~10 MB Trivy report (generated from
the fixture, never committed) through the native path and through `trivy-slack`, and the Tracee
gRPC subscriber path at max rate (the fake Tracee of tests/, built by `cargo build -p hooker-tests
--bin fake_tracee`; HOOKER_BENCH_FAKE_TRACEE names another binary).
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "dist"
# HOOKER_BENCH_AGENT: another agent binary (e.g. target/profiling/hooker, for perf).
AGENT = Path(os.environ.get("HOOKER_BENCH_AGENT", TARGET / "hooker"))
# HOOKER_BENCH_LOAD: another load generator binary (a debug build, to try the script quickly).
LOAD = Path(os.environ.get("HOOKER_BENCH_LOAD", TARGET / "hooker-load"))
FIXTURES = ROOT / "tests" / "fixtures"
EVENT = FIXTURES / "tracee" / "v0.12-era-signature-dropped-executable-TRC-1022.json"
# An event no benchmark route matches: intake, parse and routing only (nothing stored).
MISS = FIXTURES / "tracee" / "v0.13-security_file_open.json"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
RESULTS = ROOT / "bench" / "results"
FAKE_TRACEE = Path(os.environ.get(
    "HOOKER_BENCH_FAKE_TRACEE",
    Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "fake_tracee"))
TRIVY = FIXTURES / "trivy" / "trivy-image-alpine-310.json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """A dist-profile agent on a route set, in a temp dir, with every intake on."""

    def __init__(self, route_set, work):
        self.work = Path(tempfile.mkdtemp(prefix=f"hooker-bench-{route_set}-", dir=work))
        self.log = self.work / "forensic.jsonl"
        if route_set:
            config = (ROOT / "bench" / "configs" / f"{route_set}.yaml").read_text()
            # The config in a directory of its own, as a ConfigMap mount is: the agent watches
            # the config's directory, and every forensic log write in it would wake the watcher.
            (self.work / "config").mkdir()
            (self.work / "config" / "cfg.yaml").write_text(config.replace("@LOG@", str(self.log)))
        self.http = free_port()
        self.grpc = free_port()
        self.forward = free_port()
        self.socket = self.work / "hooker.sock"
        self.env = dict(
            os.environ,
            HOOKER_HTTP=f"127.0.0.1:{self.http}",
            HOOKER_HTTPS="off",
            HOOKER_PROBES="127.0.0.1:0",
            HOOKER_SOCKET=str(self.socket),
            HOOKER_STATE_DIR=str(self.work / "state"),
            HOOKER_LOG_DIR=str(self.work),
            HOOKER_GRPC=f"127.0.0.1:{self.grpc}",
            HOOKER_FORWARD=f"127.0.0.1:{self.forward}",
            HOOKER_LOG="warn",
        )
        if route_set:
            self.env["HOOKER_CFG"] = str(self.work / "config" / "cfg.yaml")
        else:
            # The embedded default config (no file at the default path).
            self.env.pop("HOOKER_CFG", None)
        self.proc = None

    def start(self):
        begin = time.perf_counter()
        self.proc = subprocess.Popen([str(AGENT), "run"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / "agent.log", "w"))
        url = f"http://127.0.0.1:{self.http}/readyz"
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"agent exited: see {self.work / 'agent.log'}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - begin
            except OSError:
                time.sleep(0.001)

    def rss_mb(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def load(agent, target, label, expect, rate=None, batch=1, connections=4, seconds=SECONDS,
         event=EVENT):
    args = [str(LOAD), "--target", target, "--event", str(event), "--log", str(agent.log),
            "--expect", str(expect), "--duration", str(seconds), "--connections", str(connections),
            "--batch", str(batch), "--pid", str(agent.proc.pid), "--label", label, "--quiet"]
    if rate:
        args += ["--rate", str(rate)]
    out = subprocess.run(args, capture_output=True, text=True)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["ok"] = out.returncode == 0
            return result
    return {"label": label, "ok": False, "error": out.stderr.strip()[-300:]}


def criterion():
    out = subprocess.run(["cargo", "bench", "-p", "hooker", "--bench", "router", "--", "--noplot"],
                         cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write(out.stdout[-4000:])
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    figures = {}
    name = None
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line.strip())
        if not m:
            m2 = re.match(r"^(\S+)$", line.strip())
            if m2:
                name = m2.group(1)
            m = re.match(r"^time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line.strip())
            if m and name:
                figures[name] = to_us(m.group(1), m.group(2))
            continue
        figures[m.group(1)] = to_us(m.group(2), m.group(3))
    return figures


def to_us(value, unit):
    scale = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]
    return float(value) * scale


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB RAM, {platform.system()} {platform.release()}"

def big_trivy_report(path, megabytes=10):
    """A Trivy report of about `megabytes` MB: the fixture's vulnerabilities repeated with new ids."""
    report = json.loads(TRIVY.read_text())
    report["ArtifactName"] = "registry.example/prod/app:1.0"
    base = [v for r in report["Results"] for v in (r.get("Vulnerabilities") or [])]
    one = len(json.dumps(base[0]))
    vulns = []
    for i in range(megabytes * 1024 * 1024 // one):
        v = dict(base[i % len(base)])
        v["VulnerabilityID"] = f"CVE-2099-{i:06d}"
        vulns.append(v)
    report["Results"] = [{"Target": "app (alpine 3.10.2)", "Class": "os-pkgs", "Type": "alpine",
                          "Vulnerabilities": vulns}]
    path.write_text(json.dumps(report, separators=(",", ":")))
    return path


def log_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def tracee_stream(work, events):
    """The Tracee gRPC subscriber at max rate: the fake Tracee streams `events` detections to an
    agent on the embedded default config; the rate is detections in its forensic log per second."""
    if not FAKE_TRACEE.exists():
        return {"label": "tracee grpc subscriber, default config", "ok": False,
                "error": f"{FAKE_TRACEE} missing (cargo build -p hooker-tests --bin fake_tracee)"}
    agent = Agent(None, work)
    sock = agent.work / "tracee.sock"
    fake = subprocess.Popen([str(FAKE_TRACEE), "--socket", str(sock)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        fake.stdout.readline()  # listening
        agent.env["HOOKER_TRACEE"] = f"unix:{sock}"
        agent.start()
        fake.stdout.readline()  # subscribed
        event = FIXTURES / "tracee" / "v0.12-era-signature-dropped-executable-TRC-1022.json"
        per_line = 500
        cpu0 = agent_cpu(agent)
        begin = time.perf_counter()
        for _ in range(events // per_line):
            fake.stdin.write("emit bench " + " ".join([str(event)] * per_line) + "\n")
        fake.stdin.flush()
        expected = events // per_line * per_line
        deadline = begin + max(120, events / 100)
        while log_lines(agent.log) < expected and time.perf_counter() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - begin
        done = log_lines(agent.log)
        cpu = agent_cpu(agent) - cpu0
        rss = agent.rss_mb()
        return {"label": "tracee grpc subscriber, default config", "ok": done >= expected,
                "per_s": done / elapsed, "cpu_ms_per_1k": cpu * 1000 / max(done, 1) * 1000,
                "rss_mb": rss, "events": done}
    finally:
        fake.stdin.close()
        fake.wait(timeout=30)
        agent.stop()


def agent_cpu(agent):
    """The agent's user + system CPU seconds so far."""
    fields = Path(f"/proc/{agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config_rows(work):
    """Step 4: each config as a user writes it, against the native path in the same run."""
    results = []
    http = lambda a: f"http://127.0.0.1:{a.http}"
    runs = [("native path (routes-10, raw-json)", "routes-10", 2, EVENT, {}),
            ("embedded default config", None, 1, EVENT, {}),
            ("postee-style helpers, rich templates", "postee-helpers", 2, EVENT, {}),
            ("inline result := input template", "inline-template", 2, EVENT, {})]
    report = big_trivy_report(Path(work) / "trivy-10mb.json")
    runs += [("10 MB trivy report, native (raw-json)", "trivy-native", 1, report,
              {"connections": 2}),
             ("10 MB trivy report, helpers + trivy-slack", "postee-helpers", 1, report,
              {"connections": 2})]
    for label, route_set, expect, event, extra in runs:
        agent = Agent(route_set, work)
        agent.start()
        result = load(agent, http(agent), label, expect, event=event,
                      **{"connections": 32, **extra})
        result["config"] = route_set or "embedded default"
        results.append(result)
        agent.stop()
    results.append(tracee_stream(work, int(os.environ.get("BENCH_TRACEE_EVENTS", "20000"))))
    native = results[0].get("completed_per_s")
    big_native = results[4].get("completed_per_s")
    lines = ["## Configs as users write them (issue 20): ratio to the native path, same run", "",
             f"HTTP, 32 connections (2 for the 10 MB report), max rate, {SECONDS:g} s each; "
             "the ratio is completed events/s over the native-path row's "
             "(the 10 MB rows: over the 10 MB native row).", "",
             "| run | config | completed/s | ratio | p99 ms | agent CPU ms per 1k events | peak RSS MB | ok |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    rounds = int(os.environ.get("BENCH_CONFIG_ROUNDS", "1"))
    if rounds > 1:
        per_round = {label: [] for label, *_ in runs[1:4]}
        for _ in range(rounds):
            base = None
            for label, route_set, expect, event, extra in runs[:4]:
                agent = Agent(route_set, work)
                agent.start()
                r = load(agent, http(agent), label, expect, event=event, connections=32)
                agent.stop()
                rate = r.get("completed_per_s") or 0
                if base is None:
                    base = rate
                elif base:
                    per_round[label].append(rate / base)
        interleaved = ["", f"Interleaved, {rounds} rounds (native, default, helpers, inline in each): "
                       "ratio to the native row of the same round.", "",
                       "| run | ratio per round | mean |", "|---|---|---:|"]
        for label, ratios in per_round.items():
            shown = ", ".join(f"{x:.2f}×" for x in ratios)
            mean = sum(ratios) / len(ratios) if ratios else 0
            interleaved.append(f"| {label} | {shown} | {mean:.2f}× |")
    else:
        interleaved = []
    for i, r in enumerate(results):
        if "per_s" in r:
            ratio = r["per_s"] / native if native else 0
            lines.append(f"| {r['label']} | embedded default + HOOKER_TRACEE | {r['per_s']:.0f} | "
                         f"{ratio:.2f}× | - | {r['cpu_ms_per_1k']:.1f} | {r['rss_mb']:.1f} | "
                         f"{'yes' if r['ok'] else 'no'} |")
            continue
        if "completed_per_s" not in r:
            lines.append(f"| {r['label']} | failed: {r.get('error', '')[:120]} | | | | | | no |")
            continue
        base = big_native if i >= 4 else native
        ratio = r["completed_per_s"] / base if base else 0
        p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}"
        cpu = "-" if r["cpu_ms_per_1k"] is None else f"{r['cpu_ms_per_1k']:.1f}"
        lines.append(f"| {r['label']} | {r['config']} | {r['completed_per_s']:.0f} | {ratio:.2f}× | "
                     f"{p99} | {cpu} | {r['rss_peak_mb']:.1f} | {'yes' if r['ok'] else 'no'} |")
    lines += interleaved
    lines.append("")
    return lines


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="hooker-bench-")
    lines = [f"# Benchmark results", "", f"- machine: {machine()}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S')}", f"- command: `bench/run.sh`",
             f"- load duration per run: {SECONDS:g} s; event: {EVENT.name} ({EVENT.stat().st_size} bytes)", ""]
    try:
        if os.environ.get("BENCH_ONLY_CONFIGS") == "1":
            lines += config_rows(work)
            return finish(lines)
        if os.environ.get("BENCH_SKIP_CRITERION") != "1":
            figures = criterion()
            lines += ["## Router micro-benchmark (criterion, µs per event, one core)", "",
                      "| step | µs | vs bound |", "|---|---:|---:|"]
            for set_name in ["routes-10", "routes-100"]:
                bound = figures.get(f"bound/{set_name}")
                for key in [f"bound/{set_name}", f"naive/{set_name}", f"router/{set_name}/match",
                            f"router/{set_name}/miss"]:
                    if key in figures:
                        ratio = f"{figures[key] / bound:.2f}×" if bound else "-"
                        lines.append(f"| {key} | {figures[key]:.2f} | {ratio} |")
            for key, value in figures.items():
                if key.startswith(("parse", "convert", "route/", "render/")):
                    lines.append(f"| {key} | {value:.2f} | |")
            lines.append("")

        # Resource figures.
        size = AGENT.stat().st_size / 1024 / 1024
        agent = Agent("routes-10", work)
        startups = []
        for _ in range(5):
            startups.append(agent.start() * 1000)
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait()
        agent.start()
        time.sleep(2)
        idle = agent.rss_mb()
        agent.stop()
        default = Agent(None, work)
        default_startups = []
        for _ in range(5):
            default_startups.append(default.start() * 1000)
            default.proc.send_signal(signal.SIGTERM)
            default.proc.wait()
        default.stop()
        lines += ["## Resources", "", "| figure | value |", "|---|---:|",
                  f"| binary size (dist, stripped) | {size:.1f} MB |",
                  f"| start-up to ready (/readyz 200), 10 routes, median of 5 | {sorted(startups)[2]:.1f} ms |",
                  f"| start-up to ready, embedded default config, median of 5 | {sorted(default_startups)[2]:.1f} ms |",
                  f"| RSS idle (10 routes, after start-up) | {idle:.1f} MB |", ""]

        # End-to-end load.
        results = []
        for set_name, expect in [("routes-10", 2), ("routes-100", 1)]:
            # Single-event requests wait for their commit, so one connection's rate is one over
            # the commit latency (about 1 ms under load): many connections, as many clients on a
            # node would. With 32, requests convoy on the disk and the agent's CPU idles 15-20 %;
            # 64 keep it busy. The 32-connection row stays for comparison.
            targets = [("http", lambda a: f"http://127.0.0.1:{a.http}", {"connections": 64}),
                       ("http batch 100", lambda a: f"http://127.0.0.1:{a.http}", {"batch": 100}),
                       ("unix", lambda a: f"unix:{a.socket}", {"connections": 64}),
                       ("forward", lambda a: f"forward://127.0.0.1:{a.forward}", {"batch": 100}),
                       ("grpc stream", lambda a: f"grpc://127.0.0.1:{a.grpc}", {"batch": 100})]
            if set_name == "routes-100":
                targets = targets[:2]
            else:
                targets.insert(1, ("http 32 connections", lambda a: f"http://127.0.0.1:{a.http}",
                                   {"connections": 32}))
            for name, url, extra in targets:
                agent = Agent(set_name, work)
                agent.start()
                results.append(load(agent, url(agent), f"{name}, {set_name}", expect, **extra))
                agent.stop()
            if set_name == "routes-10":
                # The ceiling without deliveries: an event no route matches is parsed, routed and
                # answered, nothing stored or delivered.
                for name, url, extra in [targets[0], targets[-1]]:
                    agent = Agent(set_name, work)
                    agent.start()
                    results.append(load(agent, url(agent), f"{name}, intake only", 0,
                                        event=MISS, **extra))
                    agent.stop()
            # Latency at the target's 5,000/s, and at 1,000/s (a rate this machine sustains).
            rates = [5000, 1000] if set_name == "routes-10" else [5000]
            for rate in rates:
                agent = Agent(set_name, work)
                agent.start()
                results.append(load(agent, f"http://127.0.0.1:{agent.http}", f"http, {set_name}",
                                    expect, rate=rate, connections=32))
                agent.stop()
                if set_name == "routes-10":
                    agent = Agent(set_name, work)
                    agent.start()
                    results.append(load(agent, f"grpc://127.0.0.1:{agent.grpc}",
                                        f"grpc stream, {set_name}", expect, rate=rate, connections=32))
                    agent.stop()
        lines += ["## End to end (durable outbox on, forensic `log` action)", "",
                  "| run | mode | batch | accepted/s | completed/s | p50 ms | p99 ms | p99.9 ms | agent CPU ms per 1k events | load generator CPU ms per 1k | peak RSS MB | ok |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

        def f(v):
            return "-" if v is None else f"{v:.2f}"

        for r in results:
            if "accepted_per_s" not in r:
                lines.append(f"| {r['label']} | failed: {r.get('error', '')[:120]} | | | | | | | | | | no |")
                continue
            lines.append(f"| {r['label']} | {r['mode']} | {r['batch']} | {r['accepted_per_s']:.0f} | "
                         f"{r['completed_per_s']:.0f} | {f(r['p50_ms'])} | {f(r['p99_ms'])} | {f(r['p999_ms'])} | "
                         f"{f(r['cpu_ms_per_1k'])} | {f(r.get('load_cpu_ms_per_1k'))} | {f(r['rss_peak_mb'])} | "
                         f"{'yes' if r['ok'] else 'no'} |")
        lines.append("")
        # Soak last: a steady rate, RSS sampled along the way. (It writes gigabytes of forensic
        # log; run before the load runs, the disk's write-back would slow their commits.)
        soak_seconds = float(os.environ.get("BENCH_SOAK_SECONDS", "120"))
        soak_rate = int(os.environ.get("BENCH_SOAK_RATE", "1000"))
        if soak_seconds > 0:
            agent = Agent("routes-10", work)
            agent.start()
            samples = []
            runner = subprocess.Popen(
                [str(LOAD), "--target", f"http://127.0.0.1:{agent.http}", "--event", str(EVENT),
                 "--log", str(agent.log), "--expect", "2", "--duration", str(soak_seconds),
                 "--connections", "32", "--rate", str(soak_rate), "--quiet"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            step = max(soak_seconds / 10, 1)
            while runner.poll() is None:
                samples.append(agent.rss_mb())
                time.sleep(step)
            out, _ = runner.communicate()
            agent.stop()
            soak = next((json.loads(l[7:]) for l in out.splitlines() if l.startswith("RESULT ")), {})
            lines += [f"## Soak: {soak_rate} events/s for {soak_seconds:g} s (10 routes, HTTP)", "",
                      "RSS samples (MB), first to last: " + ", ".join(f"{s:.1f}" for s in samples), "",
                      f"p99 latency {soak.get('p99_ms') or 0:.2f} ms, completed {soak.get('completed', 0)} of "
                      f"{soak.get('accepted', 0)} accepted.", ""]

        lines += config_rows(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish(lines)


def finish(lines):
    text = "\n".join(lines) + "\n"
    (RESULTS / "latest.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
