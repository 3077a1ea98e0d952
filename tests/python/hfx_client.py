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

With --format protobuf it can also send a real message of a user's own proto:
--proto names the .proto file (--proto-root is protoc's include directory, by
default the file's own directory), --message the full name of the message and
--payload-json its contents as proto3 JSON, for example

    --format protobuf --proto protos/examples/contact/addressbook.proto
    --message contact.AddressBook --payload-json '{"id": "ab-1", "people": [
        {"name": "John Doe", "phones": [{"number": "1", "type": "HOME"}]}]}'

The proto is compiled at run time with grpc_tools.protoc (python_out) into the
same kind of cache directory as the service stubs, keyed by the content of the
proto and of everything it imports; the message is built with
google.protobuf.json_format.Parse and its serialized bytes are the data of
every event. The kind then defaults to the message's full name. A proto that
does not compile, an unknown message or JSON that does not fit it exits 2.
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
    parser.add_argument("--kind", default=None,
                        help="event kind (default: the --message name if given, else python.Event)")
    parser.add_argument("--id-prefix", default="py-", help="prefix of event ids (default: py-)")
    parser.add_argument("--format", choices=("json", "protobuf"), default="json",
                        help="format field of every event (default: json)")
    parser.add_argument("--payload-file", type=Path, metavar="PATH",
                        help="send this file's bytes as the data of every event")
    parser.add_argument("--proto", type=Path, metavar="PATH",
                        help="a .proto file that defines --message (needs --message)")
    parser.add_argument("--proto-root", type=Path, metavar="DIR",
                        help="include directory for protoc; --proto must be inside it "
                             "(default: the directory of --proto)")
    parser.add_argument("--message", metavar="FULL.NAME",
                        help="with --format protobuf and --proto: send this message "
                             "(e.g. contact.AddressBook) as the data of every event")
    parser.add_argument("--payload-json", metavar="JSON",
                        help="contents of --message as proto3 JSON (default: {}, the empty message)")
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
    if args.message is not None:
        args.message = args.message.removeprefix(".")
        if not args.message:
            parser.error("--message must not be empty")
        if args.format != "protobuf":
            parser.error("--message needs --format protobuf")
        if args.proto is None:
            parser.error("--message needs --proto")
        if args.payload_file is not None:
            parser.error("--message and --payload-file cannot be used together")
    else:
        for option, value in (("--proto", args.proto), ("--proto-root", args.proto_root),
                              ("--payload-json", args.payload_json)):
            if value is not None:
                parser.error(f"{option} needs --message")
    if args.proto is not None:
        if not args.proto.is_file():
            parser.error(f"--proto: no such file: {args.proto}")
        args.proto = args.proto.resolve()
        if args.proto_root is None:
            args.proto_root = args.proto.parent
        elif not args.proto_root.is_dir():
            parser.error(f"--proto-root: no such directory: {args.proto_root}")
        args.proto_root = args.proto_root.resolve()
        try:
            args.proto.relative_to(args.proto_root)
        except ValueError:
            parser.error(f"--proto {args.proto} is not inside --proto-root {args.proto_root}")
    if args.kind is None:
        args.kind = args.message if args.message is not None else "python.Event"
    args.payload = None
    if args.payload_file is not None:
        try:
            args.payload = args.payload_file.read_bytes()
        except OSError as error:
            parser.error(f"--payload-file: {error}")
    return args


def tool_versions() -> str:
    from importlib.metadata import version

    return f"grpcio-tools {version('grpcio-tools')} protobuf {version('protobuf')}"


def well_known_dir() -> Path:
    """protoc's include directory for google/protobuf/*.proto, shipped with grpc_tools."""
    import grpc_tools

    return Path(grpc_tools.__file__).parent / "_proto"


def cache_root() -> Path:
    return Path(tempfile.gettempdir()) / "eventstash-py-stubs"


def generate_cached(key: str, what: Path, protoc_args: list[str]) -> Path:
    """Runs protoc once per key into a cache directory and returns that directory.

    protoc_args are the arguments after the program name; "{out}" in them
    stands for the directory to generate into.
    """
    from grpc_tools import protoc

    root = cache_root()
    out_dir = root / key
    if not out_dir.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        # Generate into a private directory, then rename it into place, so that
        # clients started at the same time never see half-written stubs.
        work_dir = Path(tempfile.mkdtemp(prefix="gen-", dir=root))
        status = protoc.main(["grpc_tools.protoc",
                              *(arg.replace("{out}", str(work_dir)) for arg in protoc_args)])
        if status != 0:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise RuntimeError(f"grpc_tools.protoc failed on {what} (status {status})")
        try:
            os.rename(work_dir, out_dir)
        except OSError:
            # Another client got there first; its stubs are the same.
            shutil.rmtree(work_dir, ignore_errors=True)
    return out_dir


def module_name(proto_name: str) -> str:
    """The Python module protoc's python_out makes of a proto file name (a/b-c.proto -> a.b_c_pb2)."""
    return proto_name.removesuffix(".proto").replace("-", "_").replace("/", ".") + "_pb2"


def load_stubs():
    """Generates (once per proto content) and imports the Python stubs.

    Returns the (eventstash_pb2, eventstash_pb2_grpc) modules.
    """
    proto_path = PROTO_ROOT / PROTO_FILE
    key = hashlib.sha256(proto_path.read_bytes())
    key.update(tool_versions().encode())

    out_dir = generate_cached(key.hexdigest()[:16], proto_path, [
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known_dir()}",
        "--python_out={out}",
        "--grpc_python_out={out}",
        str(proto_path),
    ])

    sys.path.insert(0, str(out_dir))
    module = PROTO_FILE.removesuffix(".proto").replace("/", ".")
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")


def load_message_class(proto: Path, proto_root: Path, message: str):
    """Compiles (once per content) the user's proto and returns the class of message.

    protoc first writes a descriptor set of the proto and everything it
    imports: that checks the proto, names the files to generate and, with the
    proto's own bytes, makes the cache key, so an edited import is noticed too.
    Then python_out generates every one of those files except the well-known
    google/protobuf ones, which the protobuf runtime already has.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    rel = proto.relative_to(proto_root).as_posix()
    include = [f"--proto_path={proto_root}", f"--proto_path={well_known_dir()}"]

    with tempfile.TemporaryDirectory(prefix="eventstash-desc-") as tmp:
        set_path = Path(tmp) / "set.pb"
        status = protoc.main(["grpc_tools.protoc", *include, "--include_imports",
                              f"--descriptor_set_out={set_path}", str(proto)])
        if status != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {proto} (status {status})")
        set_bytes = set_path.read_bytes()
    files = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(set_bytes).file]
    to_generate = [name for name in files if not name.startswith("google/protobuf/")]

    key = hashlib.sha256(b"message-proto\0")
    key.update(tool_versions().encode() + b"\0")
    key.update(rel.encode() + b"\0")
    key.update(hashlib.sha256(proto.read_bytes()).digest())
    key.update(hashlib.sha256(set_bytes).digest())
    out_dir = generate_cached(key.hexdigest()[:16], proto, [
        *include, "--python_out={out}", *(str(proto_root / name) for name in to_generate),
    ])

    sys.path.insert(0, str(out_dir))
    module = importlib.import_module(module_name(rel))

    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(message)
    except KeyError:
        known = sorted(all_message_names(module.DESCRIPTOR))
        raise RuntimeError(f"no message {message} in {rel} or its imports"
                           f" (messages of {rel}: {', '.join(known) or 'none'})") from None
    return message_factory.GetMessageClass(descriptor)


def all_message_names(file_descriptor) -> Iterator[str]:
    """Full names of the messages of a file, nested ones included (map entries left out)."""
    def walk(descriptor):
        if not descriptor.GetOptions().map_entry:
            yield descriptor.full_name
        for nested in descriptor.nested_types:
            yield from walk(nested)

    for descriptor in file_descriptor.message_types_by_name.values():
        yield from walk(descriptor)


def build_message_payload(cls, payload_json: str) -> bytes:
    """The bytes of message cls filled from proto3 JSON."""
    from google.protobuf import json_format

    message = json_format.Parse(payload_json, cls())
    return message.SerializeToString()


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

    if args.message is not None:
        try:
            cls = load_message_class(args.proto, args.proto_root, args.message)
        except Exception as error:  # noqa: BLE001 - report any setup failure plainly
            print(f"hfx_client: cannot load message {args.message} from {args.proto}: {error}",
                  file=sys.stderr)
            return 2
        payload_json = args.payload_json if args.payload_json is not None else "{}"
        try:
            args.payload = build_message_payload(cls, payload_json)
        except Exception as error:  # noqa: BLE001 - json_format.ParseError and friends
            print(f"hfx_client: --payload-json is not a valid {cls.DESCRIPTOR.full_name}: {error}",
                  file=sys.stderr)
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
