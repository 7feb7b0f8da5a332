"""Events from the worker to the trainer, as JSON lines on the stdout pipe.

At start the worker moves Python's stdout to stderr, so prints from any
library cannot corrupt the event stream; events go to the original fd 1.
Only rank 0 of a group reports. If the trainer has gone (the pipe is
closed), the worker stops.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class Reporter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._last_step = 0.0

    def emit(self, kind: str, **data: Any) -> None:
        if not self.enabled:
            return
        line = json.dumps({"kind": kind, **data}, separators=(",", ":")) + "\n"
        try:
            os.write(self._fd, line.encode())
        except BrokenPipeError:
            # The trainer is gone; nobody will collect this job's results.
            os._exit(75)

    def log(self, message: str, level: str = "INFO") -> None:
        self.emit("log", level=level, message=message)

    def step_due(self, interval: float = 0.5) -> bool:
        now = time.monotonic()
        if now - self._last_step >= interval:
            self._last_step = now
            return True
        return False
