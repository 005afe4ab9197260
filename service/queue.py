"""The loop shared by the job runner and the export runner: one thread claims the next queued item
from its store, runs it with a cancel event, and repeats until stopped."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

Item = TypeVar("Item")


class QueueRunner(ABC, Generic[Item]):
    """Cancellation reaches the running item through `self._cancel` (a DELETE, or shutdown: then
    `self._stopping` is set too, and the item goes back to the queue for the next start)."""

    def __init__(self, name: str) -> None:
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel = threading.Event()  # the running item's
        self._current: str | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._requeue_interrupted()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the running item at its next boundary; it is taken up again at the next start."""
        self._stopping.set()
        self._cancel.set()
        self._wake.set()
        self._thread.join(timeout)

    def notify(self) -> None:
        self._wake.set()

    def _signal_cancel(self, item_id: str) -> None:
        """After the store recorded the cancellation: stop the item if it is the running one."""
        with self._lock:
            if self._current == item_id:
                self._cancel.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            item = self._claim()
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            with self._lock:
                self._current = self._id(item)
                self._cancel.clear()
                # A DELETE between the claim and here found no current item to signal: re-read.
                if self._cancel_requested(item):
                    self._cancel.set()
            try:
                self._run_one(item)
            finally:
                with self._lock:
                    self._current = None

    @abstractmethod
    def _requeue_interrupted(self) -> None:
        """At start: items a dead process left running go back to the queue."""

    @abstractmethod
    def _claim(self) -> Item | None:
        """The next item to run, marked running in the store; None when the queue is empty."""

    @abstractmethod
    def _id(self, item: Item) -> str: ...

    @abstractmethod
    def _cancel_requested(self, item: Item) -> bool:
        """Whether the store says a cancellation of `item` was asked for (read fresh)."""

    @abstractmethod
    def _run_one(self, item: Item) -> None:
        """Run `item` and record how it ended; never raises."""
