"""Judge outside the engine's lock, act inside it.

Policies and the alert rules read the whole fleet (every device's record and facts, every
group's members): seconds at tens of thousands of devices. Doing that inside the engine's
tick would hold the registry's write lock -- and the engine loop -- that long. So the
engine calls ``prepare(now)`` before it takes the lock: every ``evaluate_s`` that starts
``evaluate(now)`` on a thread of its own (reads only, its own connections), and the next
ticks ``take()`` the finished judgement and apply it inside their transaction.
``background = False`` evaluates inline instead (tests with a controllable clock).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PreparedStep:
    background = True

    def __init__(self, evaluate_s: float) -> None:
        self.evaluate_s = evaluate_s
        self._last = float("-inf")
        self._thread: threading.Thread | None = None
        self._ready: list[tuple[float, Any]] = []
        self._lock = threading.Lock()

    def evaluate(self, now: float) -> Any:
        raise NotImplementedError

    def prepare(self, now: float) -> None:
        if now - self._last < self.evaluate_s:
            return
        if self._thread is not None and self._thread.is_alive():
            return  # the previous judgement is still being made
        self._last = now
        if self.background:
            self._thread = threading.Thread(target=self._run, args=(now,), daemon=True,
                                            name=f"{type(self).__name__}-evaluate")
            self._thread.start()
        else:
            self._run(now)

    def _run(self, now: float) -> None:
        try:
            result = self.evaluate(now)
        except Exception:
            log.exception("%s: evaluation failed", type(self).__name__)
            return
        with self._lock:
            self._ready.append((now, result))

    def take(self) -> list[tuple[float, Any]]:
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    def after_tick(self, now: float) -> None:
        return None
