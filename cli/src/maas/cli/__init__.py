"""The `maas` command line."""

import os

# Every failure is reported as one line of ours; gRPC's C-core log lines (handshake
# text and the like) would only repeat it. GRPC_VERBOSITY=INFO brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
