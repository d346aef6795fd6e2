"""Steps shared by the concurrency tests."""

import asyncio


class Probe:
    """A step that records how many executions run at once, and start order."""

    def __init__(self, delay=0.005):
        self.active = 0
        self.peak = 0
        self.started = []
        self.delay = delay

    async def __call__(self, x):
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.append(x)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return x
