"""Connection failures that are a TLS mismatch, said in one line with the flag that fixes it.

gRPC reports both kinds as UNAVAILABLE: a client without TLS sees a TLS
server close the socket, one with the wrong CA gets C-core's handshake text.
Neither says what to do, and the CLI's usual hint for UNAVAILABLE (start the
suite) is wrong for both: the service is running.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable

from maas.client.config import Endpoints

PROBE_SECONDS = 2.0
CA_FIX = "pass the CA that signed the server's certificate with --ca-file PEM (MAAS_TLS_CA)"
HANDSHAKE = re.compile(r"handshake|SSL_ERROR|TSI_", re.I)
CLIENT_CERTIFICATE = re.compile(r"CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN_A_CERTIFICATE|HANDSHAKE_FAILURE", re.I)
NOT_VERIFIED = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.I)
CLIENT_CERTIFICATE_FIX = (
    "TLS handshake failed: the server wants a client certificate; "
    "pass --cert-file PEM and --key-file PEM (MAAS_TLS_CERT, MAAS_TLS_KEY)"
)
PLAIN_SERVER = re.compile(r"WRONG_VERSION_NUMBER|record layer failure|packet length too long", re.I)


def tls_mismatch(message: str, endpoints: Endpoints, services: Iterable[str]) -> str | None:
    """One line for an UNAVAILABLE that a TLS mismatch caused, or None when it was something else."""
    if endpoints.tls or endpoints.ca_file or endpoints.cert_file:
        if not HANDSHAKE.search(message):
            wanted = not endpoints.cert_file and any(
                _handshake(endpoints.address(s)) == "certificate" for s in services
            )
            return CLIENT_CERTIFICATE_FIX if wanted else None
        if CLIENT_CERTIFICATE.search(message):
            return CLIENT_CERTIFICATE_FIX
        if NOT_VERIFIED.search(message):
            source = f"the CA in {endpoints.ca_file}" if endpoints.ca_file else "any CA this system trusts"
            return f"TLS handshake failed: the server's certificate is not signed by {source}; {CA_FIX}"
        if PLAIN_SERVER.search(message):
            return "TLS handshake failed: the server does not use TLS; drop --tls and --ca-file (MAAS_TLS, MAAS_TLS_CA)"
        return (
            "TLS handshake failed; check --ca-file, --cert-file and --key-file "
            "(MAAS_TLS_CA, MAAS_TLS_CERT, MAAS_TLS_KEY)"
        )
    for service in services:
        address = endpoints.address(service)
        if speaks_tls(address):
            return (
                f"the {service} at {address} uses TLS and this client does not; {CA_FIX}, "
                "or --tls (MAAS_TLS=1) when a CA this system trusts signed it"
            )
    return None


def speaks_tls(address: str) -> bool:
    return _handshake(address) in ("tls", "certificate")


def _handshake(address: str) -> str:
    """'tls', 'certificate' (TLS, and it wants a client certificate) or 'none': a probe, no certificate checked."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # as gRPC does: without it a gRPC server hangs up anyway
    try:
        with (
            socket.create_connection((host, int(port)), timeout=PROBE_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host or None) as tls,
        ):
            try:
                # With TLS 1.3 a missing client certificate is refused only after the handshake:
                # the server hangs up at once instead of waiting for our HTTP/2 preface.
                closed = tls.recv(1) == b""
            except ssl.SSLError as exc:
                return "certificate" if CLIENT_CERTIFICATE.search(str(exc)) else "tls"
            except OSError:
                closed = False  # a TLS server waiting for a request
            return "certificate" if closed else "tls"
    except ssl.SSLError as exc:
        # A TLS alert during the handshake is still a TLS server answering.
        return "tls" if "alert" in str(exc).lower() else "none"
    except (OSError, ValueError):
        return "none"
