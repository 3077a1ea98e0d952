#!/usr/bin/env python3
"""A grpcio producer that reaches eventstash over TLS, the way a Python
service in production would: grpc.ssl_channel_credentials with the CA that
signed the agent's certificate, optionally a client certificate and key for
mutual TLS, and a producer token sent as `authorization: Bearer <token>`.

It shares hfx_client.py's stubs and events (generated at run time from
protos/hfx/v1/eventstash.proto) and prints the same one line of JSON:

    {"success": true, "sent": 25}                                  exit 0
    {"success": false, "sent": 0, "code": "UNAUTHENTICATED", ...}  exit 1

    hfx_tls_client.py --addr localhost:42043 --ca certs/ca.crt \\
        [--cert certs/client-a.crt --key certs/client-a.key] [--token T] \\
        [--count N] [--kind K]

--addr's host must be a name the agent's certificate carries (localhost for
the certificates of tests/certs/make-test-ca), or give --server-name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hfx_client  # noqa: E402 - after the path is set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send events to eventstash over TLS.")
    parser.add_argument("--addr", required=True, metavar="HOST:PORT")
    parser.add_argument("--ca", required=True, type=Path, help="PEM of the CA to trust")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", type=Path, help="client key (PEM), for mutual TLS")
    parser.add_argument("--token", help="producer token (sent as a bearer token)")
    parser.add_argument("--server-name", help="name to verify in the agent's certificate")
    parser.add_argument("--count", type=int, default=10, metavar="N")
    parser.add_argument("--kind", default="python.Event")
    parser.add_argument("--id-prefix", default="py-tls-")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pb2, pb2_grpc = hfx_client.load_stubs()
    except Exception as error:  # noqa: BLE001 - report any setup failure plainly
        print(f"hfx_tls_client: cannot load stubs: {error}", file=sys.stderr)
        return 2

    import grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None,
    )
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None

    # hfx_client's events: JSON {"n": i, "source": "python"}.
    events = argparse.Namespace(format="json", payload=None, kind=args.kind,
                                id_prefix=args.id_prefix, streams=1, count=args.count)
    sent = [0]
    with grpc.secure_channel(args.addr, credentials, options=options) as channel:
        stub = pb2_grpc.EventStashStub(channel)
        try:
            response = stub.StoreEvent(hfx_client.make_requests(pb2, events, 0, sent),
                                       timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            hfx_client.emit({"success": False, "sent": sent[0],
                             "code": error.code().name, "details": error.details() or ""})
            return 1
    hfx_client.emit({"success": bool(response.success), "sent": sent[0]})
    return 0 if response.success else 1


if __name__ == "__main__":
    sys.exit(main())
