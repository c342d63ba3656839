#!/usr/bin/env python3
"""Sends events to Hooker's Fluent Forward intake with the real msgpack encoder, the way Tracee's
`--output forward:` (fluent-forward-go) and Fluent Bit do, then half-closes and reads every ack
until the server closes, so the result never depends on timing. Prints one JSON line.

usage: forward_send.py TARGET MODE [--chunk ID] [--plain] [--tag T] FILE...
  TARGET  host:port or unix:/path
  MODE    message   one [tag, time, record, option] per file (chunk ID-<n> each)
          forward   one [tag, [[time, record], ...], option]
          packed    one [tag, <bin of packed [EventTime, record] entries>, option]
  --plain        send the file's JSON object as the record instead of {"event": "<json text>"}
  --chunk ID     ask for acks
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

try:
    import msgpack
except ImportError:
    sys.stderr.write(
        "python module missing: msgpack (install with: python3 -m pip install msgpack; tests/run.sh does)\n"
    )
    sys.exit(3)


def connect(target):
    if target.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(target[len("unix:") :])
    else:
        host, port = target.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
    return sock


def event_time(now):
    sec = int(now)
    nsec = int((now - sec) * 1e9)
    return msgpack.ExtType(0, struct.pack(">II", sec, nsec))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("mode", choices=["message", "forward", "packed"])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--chunk")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--tag", default="tracee")
    opts = parser.parse_intermixed_args()

    records = []
    for path in opts.files:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        if opts.plain:
            records.append(json.loads(text))
        else:
            records.append({"event": text})

    now = time.time()
    frames = []
    if opts.mode == "message":
        for i, record in enumerate(records):
            entry = [opts.tag, int(now), record]
            if opts.chunk:
                entry.append({"chunk": "%s-%d" % (opts.chunk, i)})
            frames.append(msgpack.packb(entry, use_bin_type=True))
    elif opts.mode == "forward":
        entry = [opts.tag, [[int(now), r] for r in records]]
        if opts.chunk:
            entry.append({"chunk": opts.chunk})
        frames.append(msgpack.packb(entry, use_bin_type=True))
    else:
        packed = b"".join(msgpack.packb([event_time(now), r], use_bin_type=True) for r in records)
        option = {"size": len(records)}
        if opts.chunk:
            option["chunk"] = opts.chunk
        frames.append(msgpack.packb([opts.tag, packed, option], use_bin_type=True))

    sock = connect(opts.target)
    for frame in frames:
        sock.sendall(frame)
    sock.shutdown(socket.SHUT_WR)
    unpacker = msgpack.Unpacker(raw=False)
    acks = []
    closed_by_reset = False
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            closed_by_reset = True
            break
        if not data:
            break
        unpacker.feed(data)
        for obj in unpacker:
            acks.append(obj.get("ack") if isinstance(obj, dict) else obj)
    sock.close()
    print(json.dumps({"sent": len(records), "frames": len(frames), "acks": acks, "reset": closed_by_reset}))


if __name__ == "__main__":
    main()
