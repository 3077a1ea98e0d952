#!/usr/bin/env python3
"""A producer for eventstash's gRPC input that is not written in Rust.

The Rust end-to-end tests run this script (with the interpreter named by
EVENTSTASH_PYTHON) to check that an independent gRPC implementation can talk
to the agent. It knows the service only through the project's own
protos/hfx/v1/eventstash.proto: the Python stubs are generated from it at run
time with grpc_tools.protoc, into a cache directory under the system's temp
directory keyed by the proto's content and the tool versions.

It sends --count events over one client-streaming StoreEvent call (or
--streams such calls, one after another) and prints one line of JSON:

    {"success": true, "sent": 100}                    exit 0
    {"success": false, "sent": 100}                   exit 1 (server said no)
    {"success": false, "sent": 3, "code": "UNAVAILABLE", "details": "..."}
                                                      exit 1 (gRPC error)

"sent" is the number of events handed to gRPC. Bad arguments exit 2, as
argparse does, and so does a failure to generate the stubs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

PROTO_ROOT = Path(__file__).resolve().parent.parent.parent / "protos"
PROTO_FILE = "hfx/v1/eventstash.proto"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Send events to an eventstash gRPC input (hfx.v1.EventStash/StoreEvent).",
    )
    parser.add_argument("--addr", required=True, metavar="HOST:PORT", help="server address")
    parser.add_argument("--count", type=int, default=100, metavar="N",
                        help="events per stream (default: 100)")
    parser.add_argument("--kind", default="python.Event", help="event kind (default: python.Event)")
    parser.add_argument("--id-prefix", default="py-", help="prefix of event ids (default: py-)")
    parser.add_argument("--format", choices=("json", "protobuf"), default="json",
                        help="format field of every event (default: json)")
    parser.add_argument("--payload-file", type=Path, metavar="PATH",
                        help="send this file's bytes as the data of every event")
    parser.add_argument("--streams", type=int, default=1, metavar="K",
                        help="number of StoreEvent calls, made one after another (default: 1)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="deadline of each StoreEvent call (default: 60)")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must not be negative")
    if args.streams < 1:
        parser.error("--streams must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    args.payload = None
    if args.payload_file is not None:
        try:
            args.payload = args.payload_file.read_bytes()
        except OSError as error:
            parser.error(f"--payload-file: {error}")
    return args


def load_stubs():
    """Generates (once per proto content) and imports the Python stubs.

    Returns the (eventstash_pb2, eventstash_pb2_grpc) modules.
    """
    from importlib.metadata import version

    import grpc_tools
    from grpc_tools import protoc

    proto_path = PROTO_ROOT / PROTO_FILE
    key = hashlib.sha256(proto_path.read_bytes())
    key.update(f"grpcio-tools {version('grpcio-tools')} protobuf {version('protobuf')}".encode())

    cache_root = Path(tempfile.gettempdir()) / "eventstash-py-stubs"
    out_dir = cache_root / key.hexdigest()[:16]
    if not out_dir.is_dir():
        cache_root.mkdir(parents=True, exist_ok=True)
        # Generate into a private directory, then rename it into place, so that
        # clients started at the same time never see half-written stubs.
        work_dir = Path(tempfile.mkdtemp(prefix="gen-", dir=cache_root))
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        status = protoc.main([
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--python_out={work_dir}",
            f"--grpc_python_out={work_dir}",
            str(proto_path),
        ])
        if status != 0:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise RuntimeError(f"grpc_tools.protoc failed on {proto_path} (status {status})")
        try:
            os.rename(work_dir, out_dir)
        except OSError:
            # Another client got there first; its stubs are the same.
            shutil.rmtree(work_dir, ignore_errors=True)

    sys.path.insert(0, str(out_dir))
    module = PROTO_FILE.removesuffix(".proto").replace("/", ".")
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")


def make_requests(pb2, args: argparse.Namespace, stream: int, counter: list[int]) -> Iterator:
    """Yields the events of one stream, counting each one handed to gRPC."""
    Request = pb2.StoreEventRequest
    fmt = Request.JSON if args.format == "json" else Request.PROTOBUF
    prefix = args.id_prefix if args.streams == 1 else f"{args.id_prefix}{stream}-"
    for i in range(args.count):
        event_id = f"{prefix}{i}"
        data = args.payload if args.payload is not None else default_data(pb2, args, i, event_id)
        counter[0] += 1
        yield Request(format=fmt, data=data, kind=args.kind, id=event_id)


def default_data(pb2, args: argparse.Namespace, i: int, event_id: str) -> bytes:
    """The data of event i when no --payload-file is given.

    JSON: {"n": i, "source": "python"} in UTF-8. Protobuf: a StoreEventRequest
    (the only message the proto offers) whose data is that same JSON, so the
    bytes are a real protobuf message a test can decode.
    """
    text = json.dumps({"n": i, "source": "python"}).encode("utf-8")
    if args.format == "json":
        return text
    inner = pb2.StoreEventRequest(format=pb2.StoreEventRequest.JSON, data=text,
                                  kind=args.kind, id=event_id)
    return inner.SerializeToString()


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    try:
        pb2, pb2_grpc = load_stubs()
    except Exception as error:  # noqa: BLE001 - report any setup failure plainly
        print(f"hfx_client: cannot load stubs for {PROTO_FILE}: {error}", file=sys.stderr)
        return 2

    import grpc

    sent = [0]
    with grpc.insecure_channel(args.addr) as channel:
        stub = pb2_grpc.EventStashStub(channel)
        for stream in range(args.streams):
            requests = make_requests(pb2, args, stream, sent)
            try:
                response = stub.StoreEvent(requests, timeout=args.timeout)
            except grpc.RpcError as error:
                emit({"success": False, "sent": sent[0],
                      "code": error.code().name, "details": error.details() or ""})
                return 1
            if not response.success:
                emit({"success": False, "sent": sent[0]})
                return 1

    emit({"success": True, "sent": sent[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
