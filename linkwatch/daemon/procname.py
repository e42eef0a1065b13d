"""The engine's process name (``comm``, the ``Name:`` of /proc/PID/status): ``linkwatchd``.

keepalived's ``vrrp_track_process`` matches a process by that name through the kernel's process
events (no fork, no polling). ``linkwatch run`` renames itself at start, so the web UI and the CLI
(named ``linkwatch``, or after the Python interpreter) never count as the engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

ENGINE_NAME = "linkwatchd"
PR_SET_NAME = 15  # <linux/prctl.h>
COMM_MAX = 15  # bytes; the kernel keeps 16 with the terminating NUL

log = logging.getLogger(__name__)


def set_process_name(name: str = ENGINE_NAME) -> bool:
    """Set this process's name (the calling thread's; call it from the main thread before any
    other starts, so worker threads inherit it). Writes /proc/self/comm, else prctl(PR_SET_NAME).
    False (and a WARNING) when neither works."""
    raw = name.encode()[:COMM_MAX]
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(raw)
        return True
    except OSError as e:
        first = e
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0:
            return True
        err = ctypes.get_errno()
    except (OSError, AttributeError) as e:
        err = getattr(e, "errno", None) or 0
    log.warning("could not set the process name to %s (/proc/self/comm: %s; prctl errno %s): "
                "keepalived's track_process cannot find the engine by name", name, first, err)
    return False


def process_name(pid: int | str = "self") -> str | None:
    """The name of process ``pid`` (/proc/PID/comm), None when it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None
