"""Worker processes of the multi-process store tests, read with a deadline.

A daemon thread reads each worker's stdout into a queue, so a read waits at most its deadline
and never blocks the event loop, its executor or its shutdown (a timed-out test cannot hang on
a worker that stopped answering). A read past its deadline kills every worker of the test and
fails with what each one last reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

# How many times slower than a plain interpreter the workers run: .ci/run sets it for its
# sanitized pass. It scales the throughput and propagation bounds a test asserts (1: the
# bounds themselves).
SLOWDOWN = float(os.environ.get("FAILSAFE_TEST_SLOWDOWN", "1"))

# Seconds a worker may take to answer one command (process start-up included): generous for a
# sanitized interpreter on a loaded machine; a worker that is still silent then is stuck.
ANSWER_DEADLINE = 120.0


class Worker:
    """``python SCRIPT ARGS...``: commands written to its stdin, answers read line by line."""

    def __init__(self, script: str, *args: str) -> None:
        self.args = [script, *args]
        self.proc = subprocess.Popen(
            [sys.executable, script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.last: str | None = None  # the last line it printed
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def __repr__(self) -> str:
        return f"<worker {self.proc.pid} {' '.join(self.args[1:2])} last={self.last!r}>"

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close_input(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def _take(self) -> str | None:
        """The next line if one has arrived (raises queue.Empty if none)."""
        line = self._lines.get_nowait()
        if line is None:
            self._lines.put(None)  # stays at the end
            raise EOFError(f"{self!r} ended (exit status {self.proc.poll()})")
        self.last = line.strip()
        return self.last

    def _poll(self, end: float, deadline: float, others: Iterable[Worker]) -> str | None:
        """The next line if one has arrived, None if not yet; gives up past end."""
        try:
            line = self._take()
        except queue.Empty:
            if time.monotonic() >= end:
                _give_up([self, *others], deadline)
            return None
        assert line is not None
        return line

    def line(self, deadline: float = ANSWER_DEADLINE, others: Iterable[Worker] = ()) -> str:
        """The next line, waiting at most deadline seconds (from a synchronous test)."""
        end = time.monotonic() + deadline
        while (line := self._poll(end, deadline, others)) is None:
            time.sleep(0.005)
        return line

    async def aline(self, deadline: float = ANSWER_DEADLINE, others: Iterable[Worker] = ()) -> str:
        """The next line, waiting at most deadline seconds without blocking the event loop."""
        end = time.monotonic() + deadline
        while (line := self._poll(end, deadline, others)) is None:
            await asyncio.sleep(0.005)
        return line

    def read(self, deadline: float = ANSWER_DEADLINE, others: Iterable[Worker] = ()) -> Any:
        return _answer(self, self.line(deadline, others))

    async def aread(self, deadline: float = ANSWER_DEADLINE, others: Iterable[Worker] = ()) -> Any:
        return _answer(self, await self.aline(deadline, others))

    def stop(self, expect_ok: bool = True) -> None:
        """Closes its input (it ends on that); killed if it does not end within 60 s. Killed
        at once when called while an exception is on its way out (a failed or timed-out test,
        whose worker may be in a loop that reads no input)."""
        if sys.exc_info()[0] is not None:
            self.kill()
            return
        self.close_input()
        try:
            status = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self!r} did not end within 60 s of its input closing")
        if expect_ok:
            assert status == 0, f"{self!r} exited with {status}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _answer(worker: Worker, line: str) -> Any:
    answer = json.loads(line)
    if isinstance(answer, dict) and "error" in answer:
        pytest.fail(f"worker {worker.proc.pid}: {answer['error']}")
    return answer


def _give_up(workers: list[Worker], deadline: float) -> None:
    workers = list(dict.fromkeys(workers))
    for w in workers:
        w.kill()
    report = "; ".join(f"pid {w.proc.pid} last reported {w.last!r}" for w in workers)
    pytest.fail(f"no answer within {deadline:g} s (workers killed): {report}")


async def answers(workers: list[Worker], deadline: float = ANSWER_DEADLINE) -> list[Any]:
    """The next answer of every worker, all within deadline seconds."""
    return list(await asyncio.gather(*(w.aread(deadline, workers) for w in workers)))


def stop_all(workers: Iterable[Worker]) -> None:
    """Ends every worker (even if stopping one fails), then reports the first failure."""
    failure: BaseException | None = None
    for w in workers:
        try:
            w.stop()
        except BaseException as exc:  # the others are stopped first
            w.kill()
            failure = failure or exc
    if failure is not None:
        raise failure
