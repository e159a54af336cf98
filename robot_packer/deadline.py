"""When a search must end: a point in time, or earlier on request (a portfolio race that has its
plan stops the members still searching). Shared by the solvers and the PyBullet verification."""
from __future__ import annotations

import threading
import time
from typing import Callable


class Deadline:
    """When a search must end: at ``at`` (a ``time.monotonic()`` value), or at once after
    :meth:`stop` — a portfolio race that has its plan stops the members still searching.

    Solvers ask :meth:`passed` where they would compare the clock, and hand a stage of their
    search :meth:`sooner` (an earlier end that the same stop still ends). A native search that
    cannot poll (CP-SAT) registers how to interrupt it with :meth:`on_stop`. ``clock`` reads
    the time (tests pass a fake one).
    """

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic,
                 _signal: "_StopSignal | None" = None) -> None:
        self.at = float(at)
        self.clock = clock
        self._signal = _signal if _signal is not None else _StopSignal()

    def passed(self) -> bool:
        return self.stopped or self.clock() >= self.at

    def left(self) -> float:
        """Seconds until :attr:`at`; 0 once stopped (negative once passed)."""
        return 0.0 if self.stopped else self.at - self.clock()

    @property
    def stopped(self) -> bool:
        return self._signal.event.is_set()

    def sooner(self, at: float) -> "Deadline":
        """The earlier of ``at`` and this end, stopped together with this one."""
        return Deadline(min(float(at), self.at), self.clock, self._signal)

    def stop(self) -> None:
        """End now: :meth:`passed` turns true for this deadline and every :meth:`sooner` one."""
        self._signal.fire()

    def on_stop(self, callback: Callable[[], None]) -> "_Registration":
        """``with deadline.on_stop(fn):`` calls ``fn`` (once, from the stopping thread) if
        :meth:`stop` is called inside the block, or at once if it was called before."""
        return _Registration(self._signal, callback)


class _StopSignal:
    """The stop shared by a deadline and its :meth:`~Deadline.sooner` ones."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.callbacks: list[Callable[[], None]] = []

    def fire(self) -> None:
        with self.lock:
            self.event.set()
            callbacks, self.callbacks = self.callbacks, []
        for fn in callbacks:
            fn()


class _Registration:
    def __init__(self, signal: _StopSignal, callback: Callable[[], None]) -> None:
        self.signal, self.callback = signal, callback

    def __enter__(self) -> None:
        with self.signal.lock:
            fired = self.signal.event.is_set()
            if not fired:
                self.signal.callbacks.append(self.callback)
        if fired:
            self.callback()

    def __exit__(self, *exc) -> None:
        with self.signal.lock:
            if self.callback in self.signal.callbacks:
                self.signal.callbacks.remove(self.callback)
