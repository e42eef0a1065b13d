"""The history sink: writes every event and sample to the history database without ever delaying
the engine (one of :class:`~linkwatch.sinks.runner.SinkRunner`'s sinks).

``handle`` only appends to the :class:`~linkwatch.history.batching.Batcher` (no I/O, ever); a
driver task on the event loop decides when to commit and all SQLite work runs in one dedicated
worker thread that owns the :class:`~linkwatch.history.store.HistoryStore`. Failures (disk full,
locked database, missing directory) are logged once per streak, the buffer is kept (bounded) and
retried with a backoff; a kill -9 loses at most the samples since the last commit and no event
counted in ``stats()["events_written"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Callable

from linkwatch.core.events import EVENT_TYPES, Event
from linkwatch.history.batching import Batch, BatchPolicy, Batcher, WriteResult
from linkwatch.history.reader import HistoryError
from linkwatch.history.store import HistoryStore

if TYPE_CHECKING:  # pragma: no cover
    from linkwatch.config import HistoryConfig

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class HistorySink:
    """Writes every event and sample to the history database without ever delaying the engine.

    ``handle`` buffers and returns; a driver task on the event loop decides when to commit
    (:func:`commit_delay`) and hands each batch to one worker thread that owns the connection.
    ``clock`` is the wall clock (retention cut-offs, ``last_commit_at``); ``monotonic`` paces
    the commits.
    """

    name = "history"
    timeout = 5.0
    kinds: frozenset[str] = frozenset(EVENT_TYPES)

    def __init__(self, cfg: HistoryConfig, clock: Callable[[], float] = time.time, *,
                 monotonic: Callable[[], float] = time.monotonic, policy: BatchPolicy | None = None,
                 busy_timeout: float = 1.0, group: str | None = None):
        if not cfg.path:
            raise HistoryError("the history sink needs [history] path")
        self.path = cfg.path
        self.group = group  # of a new database file: the web UI's (the control socket's)
        self.busy_timeout = busy_timeout
        self.close_timeout = self.timeout - 0.5
        self._clock = clock
        self._mono = monotonic
        self._batcher = Batcher(policy or BatchPolicy.from_config(cfg))
        self._store: HistoryStore | None = None  # only touched in the worker thread
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._closed = False

    @property
    def policy(self) -> BatchPolicy:
        return self._batcher.policy

    async def handle(self, event: Event) -> None:
        """Buffer the event and return at once (no I/O here, ever)."""
        if self._closed:
            self._batcher.drop(event)
            return
        self._batcher.add(event, self._mono())
        if self._task is None:
            self._start()
        assert self._wake is not None
        self._wake.set()

    def _start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="linkwatch-history")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    def stats(self) -> dict[str, Any]:
        """Counters for the engine's status (see :meth:`Batcher.stats`) plus the path."""
        return {**self._batcher.stats(), "path": self.path}

    # --- the driver (event loop) -----------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                delay = self._batcher.due_in(self._mono())
                if delay is None or delay > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except TimeoutError:
                        pass
                    continue
                await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - defensive: the driver must not die
                log.exception("history: writer loop failed; going on")
                await asyncio.sleep(self.policy.commit_interval)
        await self._final_flush()

    async def _commit(self) -> bool:
        b = self._batcher
        batch = b.take(self._mono(), self._clock())
        if batch is None:
            return True
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, self._write, batch)
        except Exception as exc:
            error = describe_error(exc)
            first = b.failed(batch, error, self._mono())
            log.log(logging.WARNING if first else logging.DEBUG,
                    "history: cannot write to %s: %s; keeping %d event(s) and %d sample(s) in memory, "
                    "retrying in %gs", self.path, error, b.pending_events, b.pending_samples,
                    self.policy.retry_delay(b.failures))
            return False
        recovery = b.committed(batch, result, self._mono(), self._clock())
        if recovery is not None:
            dropped = ""
            if recovery.dropped_samples or recovery.dropped_events:
                dropped = (f"; {recovery.dropped_samples} sample(s) and {recovery.dropped_events} event(s) "
                           f"were dropped while it failed (buffer full)")
            log.info("history: writing to %s again after %d failed attempt(s); caught up %d event(s) and "
                     "%d sample(s)%s", self.path, recovery.failures, recovery.events, recovery.samples, dropped)
        if result.pruned_samples or result.pruned_events:
            log.debug("history: pruned %d sample(s) and %d event(s), freed %d page(s)",
                      result.pruned_samples, result.pruned_events, result.freed_pages)
        return True

    async def _final_flush(self) -> None:
        b = self._batcher
        if b.pending_events or b.pending_samples:
            if not await self._commit():
                log.warning("history: closing with %d event(s) and %d sample(s) not written to %s: %s",
                            b.pending_events, b.pending_samples, self.path, b.last_error)

    # --- the worker thread -----------------------------------------------------------------

    def _write(self, batch: Batch) -> WriteResult:
        if self._store is None:
            self._store = HistoryStore(self.path, self.busy_timeout, group=self.group)
        try:
            return self._store.write(batch)
        except BaseException:
            self._close_store(rollback_mode=False)  # start afresh next time (a remounted disk, a new file)
            raise

    def _close_store(self, rollback_mode: bool = True) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close(rollback_mode=rollback_mode)
            except sqlite3.Error:
                pass

    # --- closing ---------------------------------------------------------------------------

    async def close(self) -> None:
        """One final flush and close, within :attr:`close_timeout` seconds."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        if self._task is None:
            return
        assert self._wake is not None and self._executor is not None
        deadline = self._mono() + self.close_timeout
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self.close_timeout)
        except TimeoutError:
            self._task.cancel()
            log.warning("history: final write to %s did not finish in %gs; %d event(s) and %d sample(s) "
                        "not written", self.path, self.close_timeout, self._batcher.pending_events,
                        self._batcher.pending_samples)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._close_store),
                                   timeout=max(deadline - self._mono(), 0.05))
        except TimeoutError:
            log.warning("history: closing %s timed out", self.path)
        self._executor.shutdown(wait=False)
