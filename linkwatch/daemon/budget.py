"""A token bucket: how often something costly may happen (the engine's reloads)."""

from __future__ import annotations

import time
from typing import Callable


class Budget:
    """``burst`` at once, then one per ``interval`` seconds."""

    def __init__(self, burst: int, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1 or not interval > 0:
            raise ValueError(f"a budget needs burst >= 1 and interval > 0, got {burst!r} and {interval!r}")
        self.burst, self.interval, self.clock = burst, interval, clock
        self._tokens, self._at = float(burst), clock()

    def wait(self) -> float:
        """Seconds until one is allowed (0: now)."""
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
        self._at = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) * self.interval

    def take(self) -> None:
        """Spend one (call when wait() said 0)."""
        self.wait()
        self._tokens -= 1.0
