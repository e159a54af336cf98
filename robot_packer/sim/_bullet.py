"""The one place that imports pybullet: quiet import and private physics clients.

pybullet prints its build time (stderr) when imported and ``argv[0]=`` (stdout) when connected,
which would corrupt JSON printed by the CLI and its one-line errors; both are silenced here.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from typing import Iterator


# File descriptors are the process's: two threads redirecting at once (a portfolio race verifies
# in its members' threads) could each save the other's /dev/null and leave stdout silenced.
_REDIRECTING = threading.RLock()


@contextlib.contextmanager
def quiet_stdout(fds: tuple[int, ...] = (1,)) -> Iterator[None]:
    """Redirect process-level file descriptors (default: stdout) to /dev/null in the block
    (one thread at a time)."""
    with _REDIRECTING:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        saved = [os.dup(fd) for fd in fds]
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in fds:
                os.dup2(devnull, fd)
            yield
        finally:
            _libc_fflush()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            os.close(devnull)


def _libc_fflush() -> None:
    """Flush C stdio buffers (text printed by the extension before the fd is restored)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


with quiet_stdout((1, 2)):  # the build-time banner goes to stderr
    import pybullet  # noqa: E402
    import pybullet_data  # noqa: E402
    from pybullet_utils.bullet_client import BulletClient  # noqa: E402

p = pybullet


def new_client() -> BulletClient:
    """A fresh headless (DIRECT) client of its own; close it with ``client.disconnect()``."""
    with quiet_stdout():
        return BulletClient(connection_mode=pybullet.DIRECT)


def data_path(*parts: str) -> str:
    """A file in pybullet_data (e.g. ``franka_panda/panda.urdf``)."""
    return os.path.join(pybullet_data.getDataPath(), *parts)
