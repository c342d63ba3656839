#!/usr/bin/env python3
"""Relay throughput: events/s from a node agent through NATS JetStream to a responder and its sink.

Starts a real `nats-server` (JetStream, file storage, in a temp dir), one node agent and
RESPONDERS responders (durable outboxes on both sides), a local HTTP sink, then posts EVENTS
events over HTTP in batches of BATCH (the sample event of tests/fixtures, one `n` each) and times
from the first POST until the sink has taken every event. The route's webhook action runs on the
responder (`runs-on` default in cluster mode), so each event is: node intake, node outbox (fsync),
JetStream publish (acked, stored), responder pull, responder outbox (fsync), webhook POST, ack.

    python3 bench/relay.py                 # the dist build ($CARGO_TARGET_DIR/dist/hooker)
    HOOKER_BENCH_AGENT=target/debug/hooker python3 bench/relay.py

Environment: HOOKER_BENCH_AGENT (agent binary), RELAY_EVENTS (default 5000), RELAY_BATCH
(default 50), RELAY_RESPONDERS (default 2). Reads repository data only (tests/fixtures).
"""

import http.server
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "dist"
AGENT = Path(os.environ.get("HOOKER_BENCH_AGENT", TARGET / "hooker"))
EVENT = ROOT / "tests" / "fixtures" / "tracee" / "v0.12-era-signature-dropped-executable-TRC-1022.json"
EVENTS = int(os.environ.get("RELAY_EVENTS", "5000"))
BATCH = int(os.environ.get("RELAY_BATCH", "50"))
RESPONDERS = int(os.environ.get("RELAY_RESPONDERS", "2"))

CONFIG = """
routes:
  - name: relayed
    input: input.bench_n
    template: raw
    actions: [hook]
templates:
  - name: raw
    rego-package: hooker.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {url}
    max-concurrency: 32
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.seen = set()
        self.requests = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.finished_at = None
        super().__init__(("127.0.0.1", 0), SinkHandler)


class SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            n = json.loads(body).get("bench_n")
        except ValueError:
            n = None
        server = self.server
        with server.lock:
            server.requests += 1
            if n is not None:
                server.seen.add(n)
            if len(server.seen) >= EVENTS and not server.done.is_set():
                server.finished_at = time.monotonic()
                server.done.set()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_agent(work, name, nats_url, role):
    state = work / name
    state.mkdir()
    log = open(work / f"{name}.log", "w")
    env = dict(os.environ)
    env.update(
        {
            "HOOKER_CFG": str(work / "cfg.yaml"),
            "HOOKER_STATE_DIR": str(state),
            "HOOKER_LOG_DIR": str(state),
            "HOOKER_HTTP": "127.0.0.1:0",
            "HOOKER_HTTPS": "off",
            "HOOKER_GRPC": "127.0.0.1:0",
            "HOOKER_PROBES": "127.0.0.1:0",
            "HOOKER_REGO_FILTERS": str(state),
            "HOOKER_SOCKET": str(state / "hooker.sock"),
            "HOOKER_NATS": nats_url,
            "HOOKER_ROLE": role,
            "NODE_NAME": name,
            "HOOKER_LOG_FORMAT": "json",
        }
    )
    child = subprocess.Popen(
        [str(AGENT), "run"], env=env, cwd=state, stdout=subprocess.DEVNULL, stderr=log
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in (work / f"{name}.log").read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "Listening." and entry.get("intake") == "http":
                return child, entry.get("address")
        if child.poll() is not None:
            break
        time.sleep(0.05)
    child.kill()
    sys.exit(f"{name} did not start; see {work / f'{name}.log'}")


def machine():
    cpus = os.cpu_count()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{platform.node()}: {cpus} CPUs, {model}; load average {' '.join(load)} at start"


def main():
    if shutil.which("nats-server") is None:
        sys.exit("nats-server is not installed (Debian package nats-server; tests/run.sh installs it)")
    if not AGENT.exists():
        sys.exit(f"no agent binary at {AGENT} (build it, or set HOOKER_BENCH_AGENT)")
    template = json.loads(EVENT.read_text())
    work = Path(tempfile.mkdtemp(prefix="hooker-relay-bench-"))
    children = []
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        port = free_port()
        nats = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "nats")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children.append(nats)
        nats_url = f"nats://127.0.0.1:{port}"
        (work / "cfg.yaml").write_text(CONFIG.format(url=f"http://127.0.0.1:{sink.server_address[1]}/"))
        for i in range(RESPONDERS):
            child, _ = start_agent(work, f"responder-{i}", nats_url, "responder")
            children.append(child)
        node, address = start_agent(work, "node-0", nats_url, "node")
        children.append(node)
        print(machine())
        print(f"agent {AGENT}; {EVENTS} events in batches of {BATCH}; {RESPONDERS} responder(s)")
        started = time.monotonic()
        for first in range(0, EVENTS, BATCH):
            batch = []
            for n in range(first, min(first + BATCH, EVENTS)):
                event = dict(template)
                event["bench_n"] = n
                batch.append(event)
            request = urllib.request.Request(
                f"http://{address}/",
                data=json.dumps(batch).encode(),
                headers={"content-type": "application/json"},
            )
            while True:
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        if response.status == 200:
                            break
                except urllib.error.HTTPError as error:
                    if error.code != 429:
                        raise
                time.sleep(0.05)
        posted = time.monotonic() - started
        if not sink.done.wait(timeout=max(120, EVENTS / 50)):
            sys.exit(f"only {len(sink.seen)} of {EVENTS} events arrived")
        elapsed = sink.finished_at - started
        print(f"posted in {posted:.2f} s; all {EVENTS} at the sink after {elapsed:.2f} s "
              f"({sink.requests} requests)")
        print(f"relay: {EVENTS / elapsed:,.0f} events/s node -> JetStream -> responder -> sink")
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        sink.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
