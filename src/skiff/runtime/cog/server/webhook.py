"""Webhook delivery: ordered, off the prediction thread, terminal event retried."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from typing import Any

EVENTS = ("start", "output", "logs", "completed")
_TIMEOUT_S = 10
_TERMINAL_RETRIES = (0.1, 0.5, 1, 2, 4)


class WebhookSender:
    """Sends prediction snapshots to one webhook URL, filtered by event type."""

    def __init__(self, url: str, events: frozenset[str]) -> None:
        self.url = url
        self.events = events
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="cog-webhook", daemon=True)
        self._thread.start()

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        if event in self.events:
            self._queue.put((event, payload))
        if event == "completed":
            self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, payload = item
            # Every payload is the whole state: a queued later one makes a logs event moot.
            if event == "logs" and not self._queue.empty():
                continue
            if event == "completed":
                self._send_with_retries(payload)
            else:
                self._send(payload)

    def _send(self, payload: dict[str, Any]) -> bool:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "skiff-cog-runtime"},
        )
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
                return bool(200 <= resp.status < 300)
        except OSError:
            return False

    def _send_with_retries(self, payload: dict[str, Any]) -> None:
        for delay in _TERMINAL_RETRIES:
            if self._send(payload):
                return
            time.sleep(delay)
