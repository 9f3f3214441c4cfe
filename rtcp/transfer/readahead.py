"""Reading and hashing the file to send, in a helper thread a few chunks ahead of the sender.

Why a thread: both halves of the work release the GIL (a file read; SHA-256 over 256 KiB), so
the helper runs beside the event loop instead of in it. Profiled, the loop's thread read and
hashed the whole 4 MiB send buffer before the first datagram left (about 4 ms on every
transfer), and then spent about 0.9 ms of every megabyte on it that the protocol could use.

The order of chunks is fixed, so a transfer queues the same bytes in the same order as
reading them in the loop would: only when they are ready changes. The sender takes a chunk
without waiting while its connection still has data to send (`ready()`), and the helper calls
`on_chunk` (the driver's wakeup) after each one, so the loop hears of it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_END = object()  # the whole file was read


class SourceError(Exception):
    """Reading the file failed (carries the OSError) or it shrank (no cause)."""


class ReadAhead:
    """read(chunk_bytes) until `size` bytes, each chunk passed to `update` (the hash) in the
    helper thread and queued, at most `depth` chunks ahead of take()."""

    def __init__(
        self,
        fileobj,
        size: int | None,
        update: Callable[[bytes], None],
        *,
        chunk_bytes: int,
        depth: int = 4,
        name: str = "file",
        on_chunk: Callable[[], None] | None = None,
    ):
        self._file = fileobj
        self._size = size
        self._update = update
        self._chunk_bytes = chunk_bytes
        self._name = name
        self.on_chunk = on_chunk  # called in the helper thread after each chunk is queued
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="rtcp-readahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        done = 0
        item: object = _END
        try:
            while (self._size is None or done < self._size) and not self._stop.is_set():
                want = self._chunk_bytes if self._size is None else self._size - done
                chunk = self._file.read(min(want, self._chunk_bytes))
                if not chunk and self._size is None:
                    break  # the end of a stream of unknown size (stdin)
                if not chunk:
                    item = SourceError(
                        f"{self._name} shrank while being sent ({done} of {self._size} bytes)"
                    )
                    break
                self._update(chunk)
                done += len(chunk)
                if not self._put(chunk):
                    return
                if self.on_chunk is not None:
                    self.on_chunk()
        except OSError as exc:
            item = SourceError(f"cannot read {self._name}: {exc.strerror or exc}")
        except BaseException as exc:  # noqa: BLE001 - reported to the loop's thread, not lost
            item = SourceError(f"cannot read {self._name}: {exc!r}")
        self._put(item)
        if self.on_chunk is not None:
            self.on_chunk()

    def _put(self, item: object) -> bool:
        """Queue item, waiting for room; False when close() was called meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def ready(self) -> bool:
        """take() would not wait."""
        return self._finished or not self._queue.empty()

    def take(self) -> bytes | None:
        """The next chunk, waiting for it if need be; None at the end of the file. Raises
        SourceError when the file could not be read whole."""
        if self._finished:
            return None
        while True:
            try:
                item = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                    raise SourceError(f"cannot read {self._name}: reader stopped") from None
        if item is _END:
            self._finished = True
            return None
        if isinstance(item, SourceError):
            self._finished = True
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the helper (a failed or interrupted transfer) and wait for it."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join()
