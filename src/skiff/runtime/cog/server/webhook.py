"""Webhook delivery: ordered, off the prediction thread, throttled as Cog does.

``start`` and ``completed`` go out at once (``completed`` with retries: it is how the
caller learns the outcome); ``output`` and ``logs`` at most once every 500 ms. Each
payload is the whole prediction, so a throttled event simply sends the latest state.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from typing import Any

EVENTS = ("start", "output", "logs", "completed")
_TIMEOUT_S = 10
_THROTTLE_S = 0.5
_TERMINAL_RETRIES = (0.1, 0.5, 1, 2, 4)

_Item = tuple[str, dict[str, Any]]


class WebhookSender:
    """Sends prediction snapshots to one webhook URL, filtered by event type."""

    def __init__(self, url: str, events: frozenset[str]) -> None:
        self.url = url
        self.events = events
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._last_progress = 0.0
        self._thread = threading.Thread(target=self._loop, name="cog-webhook", daemon=True)
        self._thread.start()

    def notify(self, event: str, payload: dict[str, Any]) -> None:
        if event in self.events or event == "completed":
            # "completed" is queued even when filtered out: it ends the sender thread.
            self._queue.put((event, payload))

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        pending: _Item | None = None  # the latest throttled progress event
        while True:
            timeout = None
            if pending is not None:
                timeout = max(0.0, self._last_progress + _THROTTLE_S - time.monotonic())
            try:
                event, payload = self._queue.get(timeout=timeout)
            except queue.Empty:
                if pending is not None:
                    self._send_progress(pending[1])
                    pending = None
                continue
            if event == "completed":
                if "completed" in self.events:
                    self._send_with_retries(payload)  # supersedes any pending progress
                elif pending is not None:
                    self._send(pending[1])
                return
            if event == "start":
                self._send(payload)
            elif time.monotonic() - self._last_progress >= _THROTTLE_S and pending is None:
                self._send_progress(payload)
            else:
                pending = (event, payload)

    def _send_progress(self, payload: dict[str, Any]) -> None:
        self._last_progress = time.monotonic()
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
