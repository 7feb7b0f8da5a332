"""`python -m maas.cli.health HOST:PORT`: exit 0 when the server reports SERVING (grpc.health.v1).

What container health checks run (the images have no grpc_health_probe);
`maas status` uses it for all three services. Over TLS give --ca-file (and,
for mutual TLS, --cert-file and --key-file); health needs no token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(
    address: str,
    service: str = "",
    timeout: float = 3.0,
    *,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    tls: bool = False,
) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN, ... or UNREACHABLE."""
    if tls or root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        channel = grpc.secure_channel(address, creds)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return "SERVICE_UNKNOWN" if code == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maas.cli.health", description=__doc__.splitlines()[0])
    parser.add_argument("address", metavar="HOST:PORT")
    parser.add_argument("--service", default="", help="a service name (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--tls", action="store_true", help="TLS with the system's roots")
    parser.add_argument("--ca-file", metavar="PEM", help="CA of the server's certificate (implies --tls)")
    parser.add_argument("--cert-file", metavar="PEM", help="client certificate, for mutual TLS")
    parser.add_argument("--key-file", metavar="PEM", help="client key, for mutual TLS")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        material = (_read(args.ca_file), _read(args.cert_file), _read(args.key_file))
    except OSError as exc:
        print(f"{args.address}: cannot read a TLS file: {exc.strerror}", file=sys.stderr)
        return 2
    status = check(
        args.address,
        args.service,
        args.timeout,
        root_certificates=material[0],
        certificate_chain=material[1],
        private_key=material[2],
        tls=args.tls,
    )
    if not args.quiet:
        print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
