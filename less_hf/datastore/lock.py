"""One writer per datastore: an exclusive ``fcntl.flock`` on ``<datastore>/.lock`` for the whole build.

The kernel drops a ``flock`` when its process dies, so a lock left by a killed build never blocks the resume. Under
`accelerate launch` only the main process takes the lock and tells the other ranks whether it got it, so the ranks
of one job cooperate while a second job fails fast. Readers take no lock.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .distributed import Shard

LOCK_FILE = ".lock"


class DatastoreLockedError(RuntimeError):
    """Another process is writing this datastore."""


class WriterLock:
    """Context manager holding the datastore's writer lock (non-blocking: fails at once when it is taken).

    Args:
        directory: the datastore folder (created if missing).
        shard: the job's shard; only its main process locks.
    """

    def __init__(self, directory: str | os.PathLike, shard: Shard | None = None) -> None:
        self.directory = Path(directory)
        self.shard = shard or Shard()
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        import fcntl

        message = ""
        if self.shard.is_main:
            path = self.directory / LOCK_FILE
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                message = (
                    f"W:Cannot write the datastore to {self.directory} ({err.strerror or err}). Choose a writable "
                    "folder (LESSSelector(datastore_dir=...) / --datastore_dir)."
                )
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    os.close(fd)
                    if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    holder = path.read_text(errors="replace").strip()[:32] or "?"
                    message = (
                        f"L:Another process (pid {holder}) is writing the datastore at {self.directory}. Wait for it "
                        "to finish (then this command reuses its result), or use another datastore dir. A killed "
                        "build does not hold the lock: its resume is never blocked."
                    )
                else:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                    self._fd = fd
        if self.shard.world_size > 1:
            message = self.shard.broadcast_from_main(message)
        if message.startswith("W:"):
            raise OSError(errno.EACCES, message[2:])
        if message:
            raise DatastoreLockedError(message[2:])
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
