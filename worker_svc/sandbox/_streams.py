"""A run's output: the pipes of its stdout/stderr, read on the event loop into a
capped tail (kept in the database) and handed live to the worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from core.domain import LogStream

# Called with each chunk as it is read; must not block (it runs in the reader callback).
OutputCallback = Callable[[LogStream, bytes], None]

READ_CHUNK = 65536
# A script's stream is read at most once per this long while the script runs: what
# it printed meanwhile comes in one read (and one live-output entry), not one wake-up
# per line.
OUTPUT_GATHER_SECONDS = 0.01
_HURRY_BYTES = 16384  # this much gathered in OUTPUT_GATHER_SECONDS: the script writes fast


class TailBuffer:
    """Keeps the last ``cap`` bytes written."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def output_pipe() -> tuple[int, int]:
    """A pipe for a script's stdout or stderr: the worker's read end does not block;
    the script's write end does, as a terminal's or a file's would (a full pipe makes
    the script wait for the reader, it never fails its write or drops the output)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    return read_end, write_end


class Streams:
    """Reads a child's stdout and stderr into their tail buffers and ``on_output``:
    reader callbacks on the loop, no task per stream.

    A stream is read at once when it becomes readable, but at most once per
    ``OUTPUT_GATHER_SECONDS``: what a script prints line by line arrives in a few
    reads, not one wake-up per line. A stream that gave a big read after such a wait
    (the script writes fast and may be waiting on a full pipe) is read at once from
    then on; once the child has exited, everything left is read at once.
    """

    def __init__(
        self, stdout: int, stderr: int, out: TailBuffer, err: TailBuffer, on_output: OutputCallback | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._open: dict[int, tuple[TailBuffer, LogStream]] = {
            stdout: (out, LogStream.STDOUT),
            stderr: (err, LogStream.STDERR),
        }
        self._on_output = on_output
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._later: dict[int, asyncio.TimerHandle] = {}
        self._hurry: set[int] = set()  # streams read as soon as they are readable
        self._last_read: dict[int, float] = {}
        for fd in self._open:
            self._loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        since = self._loop.time() - self._last_read.get(fd, -OUTPUT_GATHER_SECONDS)
        if fd in self._hurry or since >= OUTPUT_GATHER_SECONDS:
            self._read(fd)
            return
        self._loop.remove_reader(fd)
        self._later[fd] = self._loop.call_later(OUTPUT_GATHER_SECONDS - since, self._gathered, fd)

    def _gathered(self, fd: int) -> None:
        del self._later[fd]
        self._loop.add_reader(fd, self._readable, fd)
        if self._read(fd) >= _HURRY_BYTES:
            self._hurry.add(fd)  # a fast writer: from now on, read as soon as it writes

    def _read(self, fd: int) -> int:
        """Reads what is there; returns how many bytes."""
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return 0
        except OSError:
            chunk = b""
        if not chunk:
            self._close(fd)
            return 0
        self._last_read[fd] = self._loop.time()
        buffer, stream = self._open[fd]
        buffer.write(chunk)
        if self._on_output is not None:
            self._on_output(stream, chunk)
        return len(chunk)

    def _close(self, fd: int) -> None:
        later = self._later.pop(fd, None)
        if later is not None:
            later.cancel()
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._open[fd]
        if not self._open and not self._done.done():
            self._done.set_result(None)

    async def drained(self, timeout: float) -> None:
        """After the child ended: until both streams reached EOF, at most ``timeout``;
        then stop reading."""
        self._hurry.update(self._open)
        for fd, later in list(self._later.items()):
            later.cancel()
            self._gathered(fd)
        if self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
        for fd in list(self._open):
            self._close(fd)
