"""Where predictions run, and how a cancel reaches them.

One prediction at a time (Cog's default) runs on the main thread: a cancel is then a
signal, which Python delivers to the main thread and which interrupts blocking calls
such as ``time.sleep`` or socket reads, as in Cog (which signals its worker process).
Several at a time run in threads, where a cancel is an asynchronous exception raised
at the thread's next Python instruction (blocking C calls finish first).
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable

CANCEL_SIGNAL = getattr(signal, "SIGUSR1", None)

Job = Callable[[], None]


def set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in another thread (None clears a pending one)."""
    import ctypes  # deferred: the server must start listening fast

    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)


class Executor:
    """Runs jobs on their own threads; ``run_forever`` just parks the caller."""

    def __init__(self) -> None:
        self._stopped = threading.Event()

    def submit(self, job: Job, name: str) -> None:
        threading.Thread(target=job, name=name, daemon=True).start()

    def interrupt(self, thread_id: int, exc: type[BaseException]) -> None:
        set_async_exc(thread_id, exc)

    def clear_interrupt(self, thread_id: int) -> None:
        set_async_exc(thread_id, None)

    def run_forever(self) -> None:
        while not self._stopped.wait(0.5):  # a timeout keeps Ctrl-C responsive
            pass

    def stop(self) -> None:
        self._stopped.set()


class MainThreadExecutor(Executor):
    """Runs jobs one after another on the thread that calls ``run_forever`` (the main one).

    ``on_signal`` is called from the signal handler, in the main thread, between two
    Python instructions; it decides whether to raise (it must not take locks that the
    interrupted code may hold).
    """

    def __init__(self, on_signal: Callable[[], None]) -> None:
        super().__init__()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._on_signal = on_signal
        self._main = threading.main_thread().ident

    @staticmethod
    def supported() -> bool:
        return CANCEL_SIGNAL is not None and hasattr(signal, "pthread_kill")

    def install(self) -> None:
        """Install the cancel signal handler; call from the main thread."""
        assert CANCEL_SIGNAL is not None
        signal.signal(CANCEL_SIGNAL, lambda _signum, _frame: self._on_signal())

    def submit(self, job: Job, name: str) -> None:
        self._jobs.put(job)

    def interrupt(self, thread_id: int, exc: type[BaseException]) -> None:
        if thread_id == self._main and CANCEL_SIGNAL is not None and self._main is not None:
            signal.pthread_kill(self._main, CANCEL_SIGNAL)
        else:
            super().interrupt(thread_id, exc)

    def clear_interrupt(self, thread_id: int) -> None:
        if thread_id != self._main:
            super().clear_interrupt(thread_id)

    def run_forever(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def stop(self) -> None:
        self._jobs.put(None)
