"""`python -m maas.cli.health HOST:PORT`: exit 0 when the server reports SERVING (grpc.health.v1).

What container health checks run (the images have no grpc_health_probe);
`maas status` uses it for all three services.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN, ... or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return "SERVICE_UNKNOWN" if code == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maas.cli.health", description=__doc__.splitlines()[0])
    parser.add_argument("address", metavar="HOST:PORT")
    parser.add_argument("--service", default="", help="a service name (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    status = check(args.address, args.service, args.timeout)
    if not args.quiet:
        print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
