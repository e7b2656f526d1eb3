"""Server-sent events for ``Accept: text/event-stream`` prediction requests (Cog 0.17+).

Each prediction's events are kept (up to a bound) so an idempotent ``PUT`` retry can
replay the stream of a prediction already running, as Cog does.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from ..prediction import Prediction

_CAPACITY = int(os.environ.get("COG_STREAM_HISTORY_CAPACITY", "1024"))


class EventStream:
    """One prediction's SSE events, fed by the runner's event hook, read by handlers."""

    def __init__(self, streams_output: bool, capacity: int = _CAPACITY) -> None:
        self._streams_output = streams_output
        self._capacity = capacity
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._dropped = 0  # events evicted from the front of the history
        self._cond = threading.Condition()
        self._closed = False
        self._outputs_sent = 0
        self._logs_sent = 0

    def on_event(self, event: str, p: Prediction) -> None:
        with self._cond:
            if event == "start":
                self._add("start", {"id": p.id, "status": "processing"})
            elif event == "output":
                items = p.output if self._streams_output else [p.output]
                for index in range(self._outputs_sent, len(items)):
                    self._add("output", {"chunk": items[index], "index": index})
                self._outputs_sent = len(items)
            elif event == "logs":
                for text in p.logs[self._logs_sent :]:
                    self._add("log", {"source": "stdout", "data": text})
                self._logs_sent = len(p.logs)
            elif event == "completed":
                self._add("completed", p.to_json())
                self._closed = True
            self._cond.notify_all()

    def _add(self, name: str, data: dict[str, Any]) -> None:
        self._events.append((name, data))
        if self._capacity and len(self._events) > self._capacity:
            self._events.pop(0)
            self._dropped += 1

    def read(self) -> Iterator[bytes]:
        """The stream from its first event; an ``error`` event if that was evicted."""
        position = 0
        while True:
            with self._cond:
                self._cond.wait_for(functools.partial(self._has_news, position))
                if position < self._dropped:
                    yield _encode("error", {"detail": "earlier events were dropped"})
                    return
                batch = self._events[position - self._dropped :]
                position += len(batch)
                finished = self._closed and position == self._dropped + len(self._events)
            for name, data in batch:
                yield _encode(name, data)
            if finished:
                return

    def _has_news(self, position: int) -> bool:
        return self._dropped + len(self._events) > position or self._closed


def _encode(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
