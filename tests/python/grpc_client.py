#!/usr/bin/env python3
"""A gRPC client for Hooker's intake written against grpcio (another implementation than tonic).

Stubs are generated at run time from proto/hooker/v1/intake.proto into a temporary directory.
Every result is printed as one JSON line so the Rust tests can assert on it.

usage: grpc_client.py TARGET [--token T] COMMAND [ARGS]
  TARGET   host:port or unix:/path/to/socket
  publish FILE...               unary Publish, one call per file
  publish-text TEXT [ROUTE]     unary Publish of a literal payload (for bad JSON, unknown routes)
  stream [--batch N] FILE...    PublishStream: one event per file, N events per batch
  health                        Health
  reflect                       services and Intake methods, discovered by server reflection
"""

import argparse
import json
import os
import sys
import tempfile

MISSING = []
try:
    import grpc
except ImportError:
    MISSING.append("grpcio")
try:
    from grpc_tools import protoc
except ImportError:
    MISSING.append("grpcio-tools")
try:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError:
    MISSING.append("grpcio-reflection")
if MISSING:
    sys.stderr.write(
        "python modules missing: %s (install with: python3 -m pip install %s; tests/run.sh does)\n"
        % (", ".join(MISSING), " ".join(MISSING))
    )
    sys.exit(3)

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="hooker-grpc-stubs-")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            "-I" + PROTO_DIR,
            "--python_out=" + out,
            "--grpc_python_out=" + out,
            "hooker/v1/intake.proto",
        ]
    )
    if code != 0:
        sys.stderr.write("grpc_tools.protoc failed with %d\n" % code)
        sys.exit(4)
    sys.path.insert(0, out)
    from hooker.v1 import intake_pb2, intake_pb2_grpc  # noqa: E402

    return intake_pb2, intake_pb2_grpc


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def error_line(err, **extra):
    line = {"code": err.code().name, "details": err.details()}
    line.update(extra)
    return line


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--token")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--batch", type=int, default=2)
    opts = parser.parse_intermixed_args()

    pb, pb_grpc = load_stubs()
    # Default channel options: on unix: targets grpcio sends the %-encoded socket path as
    # :authority, which the agent accepts (agent/src/intake/h2_authority.rs).
    channel = grpc.insecure_channel(opts.target)
    grpc.channel_ready_future(channel).result(timeout=20)
    metadata = [("authorization", "Bearer " + opts.token)] if opts.token else None
    intake = pb_grpc.IntakeStub(channel)

    if opts.command == "publish":
        for path in opts.args:
            with open(path, "rb") as f:
                payload = f.read()
            event = pb.Event(payload=payload, source="grpc_client.py", metadata={"file": os.path.basename(path)})
            try:
                reply = intake.Publish(pb.PublishRequest(event=event), metadata=metadata, timeout=30)
                emit({"file": os.path.basename(path), "code": "OK", "events": reply.events, "matches": reply.matches})
            except grpc.RpcError as err:
                emit(error_line(err, file=os.path.basename(path)))
    elif opts.command == "publish-text":
        route = opts.args[1] if len(opts.args) > 1 else ""
        event = pb.Event(payload=opts.args[0].encode(), route=route)
        try:
            reply = intake.Publish(pb.PublishRequest(event=event), metadata=metadata, timeout=30)
            emit({"code": "OK", "events": reply.events, "matches": reply.matches})
        except grpc.RpcError as err:
            emit(error_line(err))
    elif opts.command == "stream":
        events = []
        for path in opts.args:
            with open(path, "rb") as f:
                events.append(pb.Event(payload=f.read(), source="grpc_client.py"))

        def batches():
            seq = 0
            for start in range(0, len(events), opts.batch):
                seq += 1
                yield pb.PublishBatch(seq=seq, events=events[start : start + opts.batch])

        try:
            for ack in intake.PublishStream(batches(), metadata=metadata, timeout=60):
                emit(
                    {
                        "seq": ack.seq,
                        "accepted": ack.accepted,
                        "rejected": ack.rejected,
                        "total_accepted": ack.total_accepted,
                        "total_rejected": ack.total_rejected,
                        "rejections": [
                            {"seq": r.seq, "index": r.index if r.HasField("index") else None, "code": r.code, "reason": r.reason}
                            for r in ack.rejections
                        ],
                    }
                )
        except grpc.RpcError as err:
            emit(error_line(err))
    elif opts.command == "health":
        reply = intake.Health(pb.HealthRequest(), timeout=10)
        emit({"version": reply.version, "ready": reply.ready, "routes": reply.routes})
    elif opts.command == "reflect":
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = sorted(s.name for r in responses for s in r.list_services_response.service)
        database = ProtoReflectionDescriptorDatabase(channel)
        from google.protobuf.descriptor_pool import DescriptorPool

        pool = DescriptorPool(database)
        intake_service = pool.FindServiceByName("hooker.v1.Intake")
        methods = sorted(m.name for m in intake_service.methods)
        emit({"services": services, "methods": methods})
    else:
        sys.stderr.write("unknown command %s\n" % opts.command)
        sys.exit(2)


if __name__ == "__main__":
    main()
