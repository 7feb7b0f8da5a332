"""Worker entry point.

`python -m maas.trainer.worker --job-dir DIR` runs one job (this is what
torch.distributed.run starts on every rank). `--warm` imports torch and the
catalogs first, then waits for a job directory on stdin: the trainer keeps one
such process ready so a single-process job does not pay the import time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maas-trainer-worker")
    parser.add_argument("--job-dir", type=Path)
    parser.add_argument("--warm", action="store_true")
    args = parser.parse_args(argv)
    from maas.trainer.launcher import die_with_parent

    die_with_parent()

    import sklearn.datasets  # noqa: F401 - warm the imports a job needs
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    from maas.trainer.worker import loop

    job_dir = args.job_dir
    if args.warm:
        line = sys.stdin.readline()
        if not line:
            return 0  # the trainer closed the pipe: shut down unused
        job_dir = Path(json.loads(line)["job_dir"])
    if job_dir is None:
        parser.error("--job-dir or --warm is required")
    return loop.run(job_dir)


if __name__ == "__main__":
    sys.exit(main())
