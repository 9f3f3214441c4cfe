"""The file handling that the trace and pcap writers share: flush, close once, `with`."""

from __future__ import annotations

from typing import IO, Any, Self


class OwnedFile:
    """A writer on a file object that it closes only if it opened it itself."""

    _file: IO[Any]
    _owns_file: bool
    _closed: bool

    def flush(self) -> None:
        if not self._closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and (when the writer opened it) close the file. Later writes are ignored."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.flush()
        finally:
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
