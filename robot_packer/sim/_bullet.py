"""The one place that imports pybullet: quiet import and private physics clients.

pybullet prints its build time and ``argv[0]=`` on C-level stdout when imported and connected,
which would corrupt JSON printed by the CLI; both are silenced here by redirecting fd 1.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Redirect the process-level stdout (fd 1) to /dev/null inside the block."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or no real stdout
        fd = 1
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        _libc_fflush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _libc_fflush() -> None:
    """Flush C stdio buffers (text printed by the extension before the fd is restored)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


with quiet_stdout():
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
