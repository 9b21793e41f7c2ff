"""Dynamic batching: requests that arrive together go to the model together.

Gradio runs each request in its own worker thread. Decoding one sentence at a
time leaves most of the machine idle (a 16-sentence batch costs little more
than one sentence on CPU), so every model call goes through one `Batcher`:

    request threads --submit(segments, key)--> queue --> one model thread
                                                  (takes all waiting requests with
                                                   the same key, one translate call,
                                                   hands each request its slice)

No request waits for a timer: the model thread takes whatever is queued when
it is free, so a lone request runs at once and, under load, the requests
that queued during one call make up the next batch. If a batch of several
requests fails, each request is retried alone, so one bad input fails only
its own request. The model thread also keeps JAX calls one at a time, which
on a small machine is faster than interleaving them.

Background work (the warm-up that compiles more batch shapes once the server
serves) asks `wait_idle` before each step, so it runs while no request is
queued or in progress and none has come for a moment.
"""

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Request:
    segments: list[str]
    key: Hashable
    future: concurrent.futures.Future


class Batcher:
    """Serialises calls to `translate_batch(segments, key) -> outputs` and batches them.

    max_segments: a batch is closed once it holds this many segments (one
    request larger than that still runs whole, alone).
    """

    def __init__(self, translate_batch: Callable[[list[str], Hashable], list[str]], *, max_segments: int):
        self._translate_batch = translate_batch
        self._max_segments = max_segments
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._pending: list[_Request] = []  # taken from the queue, waiting for a batch of their key
        self.batch_sizes: list[int] = []  # requests per model call, for tests and logs
        self._activity = threading.Condition()
        self._in_progress = 0  # requests submitted and not answered yet
        self._last_activity = time.monotonic()  # when a request last arrived or was answered
        self._thread = threading.Thread(target=self._run, name="mtmoe-batcher", daemon=True)
        self._thread.start()

    def submit(self, segments: list[str], key: Hashable) -> list[str]:
        """Translate `segments` (all with the same `key`); blocks until done, raises what the model raised."""
        if not segments:
            return []
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._activity:
            self._in_progress += 1
            self._last_activity = time.monotonic()
        try:
            self._queue.put(_Request(list(segments), key, future))
            return future.result()
        finally:
            with self._activity:
                self._in_progress -= 1
                self._last_activity = time.monotonic()
                self._activity.notify_all()

    def wait_idle(self, quiet_s: float, *, since: float | None = None) -> None:
        """Block until no request is in progress and none has arrived or finished for `quiet_s` seconds.

        since: a `time.monotonic()` moment the quiet time may not start before
        (e.g. when the server began to serve).
        """
        with self._activity:
            while True:
                if self._in_progress:
                    self._activity.wait()
                    continue
                remaining = max(self._last_activity, since or 0.0) + quiet_s - time.monotonic()
                if remaining <= 0:
                    return
                self._activity.wait(remaining)

    def _next_batch(self) -> list[_Request]:
        if not self._pending:
            self._pending.append(self._queue.get())  # sleep until there is work
        while True:  # take everything already waiting, without waiting for more
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        key = self._pending[0].key
        batch, rest, size = [], [], 0
        for request in self._pending:
            fits = not batch or size + len(request.segments) <= self._max_segments
            if request.key == key and fits:
                batch.append(request)
                size += len(request.segments)
            else:
                rest.append(request)
        self._pending = rest
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            self.batch_sizes.append(len(batch))
            try:
                self._answer(batch)
            except BaseException as e:  # never let the model thread die: every waiter gets an answer
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(e)

    def _answer(self, batch: list[_Request]) -> None:
        segments = [segment for request in batch for segment in request.segments]
        try:
            outputs = self._translate_batch(segments, batch[0].key)
            if len(outputs) != len(segments):
                raise RuntimeError(f"translator returned {len(outputs)} outputs for {len(segments)} inputs")
        except Exception as e:
            if len(batch) == 1:
                batch[0].future.set_exception(e)
                return
            log.warning("a batch of %d requests failed (%s); retrying them one by one", len(batch), type(e).__name__)
            for request in batch:
                self._answer([request])
            return
        start = 0
        for request in batch:
            request.future.set_result(outputs[start : start + len(request.segments)])
            start += len(request.segments)
