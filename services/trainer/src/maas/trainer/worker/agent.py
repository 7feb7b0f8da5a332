"""torch.distributed.run, started so that it dies with the trainer.

The agent asks for SIGTERM when the trainer exits (it then stops its
workers), and runs torchrun's own entry point with the given arguments.
"""

from __future__ import annotations

import sys

from maas.trainer.launcher import die_with_parent


def main() -> None:
    die_with_parent()
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:])


if __name__ == "__main__":
    main()
