"""A simulated remote dependency that fails and stalls at random."""

from __future__ import annotations

import asyncio
import random
from collections import Counter


class FlakyDependency:
    """Answers after ``latency`` seconds; raises ConnectionError with probability
    ``fail_rate``; hangs for ``stall`` seconds with probability ``stall_rate``."""

    def __init__(
        self,
        *,
        fail_rate: float = 0.3,
        stall_rate: float = 0.05,
        stall: float = 1.0,
        latency: float = 0.002,
        seed: int = 7,
    ) -> None:
        self.fail_rate = fail_rate
        self.stall_rate = stall_rate
        self.stall = stall
        self.latency = latency
        self.rng = random.Random(seed)
        self.calls = Counter[str]()

    async def price(self, item: int) -> float:
        self.calls["total"] += 1
        await asyncio.sleep(self.latency)
        roll = self.rng.random()
        if roll < self.fail_rate:
            self.calls["failed"] += 1
            raise ConnectionError("connection reset by the price service")
        if roll < self.fail_rate + self.stall_rate:
            self.calls["stalled"] += 1
            await asyncio.sleep(self.stall)
        return 100.0 + item % 50


dependency = FlakyDependency()
