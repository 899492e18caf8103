"""One process per run folder: the lock file ``run.lock`` in a run's ``--out``.

Two runs writing into one folder would interleave their records in ``metrics.jsonl`` and overwrite
each other's checkpoints. A run therefore takes the folder's lock before it reads or writes there:
the file is created with ``O_CREAT | O_EXCL`` (so of two processes exactly one creates it) and holds
the owner's pid and host as JSON. While the owner is alive, another run in the folder is refused with
a message naming the folder and the pid. A lock whose owner is gone (a run killed by SIGKILL, which
runs no clean-up) is stale and is taken over. A lock written on another host cannot be checked from
here and is refused; the message says which file to delete if no run is going on there. The lock is
removed when the run ends, also by an exception or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from types import TracebackType

LOCK_FILE = "run.lock"
# A stale lock removed here may be taken by another starting run first; try this many times.
_ATTEMPTS = 5


class RunFolderInUseError(ValueError):
    """Another live process owns the run folder."""


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this machine (one of another user counts)."""
    if pid <= 0:  # os.kill(0, ...) would signal this process's group, not one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """This process's ownership of run folder ``folder`` (created if missing).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`. A folder the lock created
    and that is still empty when it is released is removed again, so a run refused at its start
    leaves nothing behind.

    Raises:
        RunFolderInUseError: from :meth:`acquire`, when a live process (or one on another host)
            holds the folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False
        self._owner = ""
        self._made_folder = False

    def acquire(self) -> None:
        if self.held:
            return
        try:
            self.folder.mkdir(parents=True)
            self._made_folder = True
        except FileExistsError:
            pass
        self._owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n"
        try:
            for _ in range(_ATTEMPTS):
                try:
                    descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._remove_stale_lock()
                    continue
                with os.fdopen(descriptor, "w") as stream:
                    stream.write(self._owner)
                self.held = True
                return
            raise RunFolderInUseError(
                f"{self.folder} is in use: other runs kept taking its lock {self.path}; choose another --out"
            )
        except BaseException:
            self._remove_made_folder()
            raise

    def release(self) -> None:
        """Remove the lock if this process still holds it (a no-op otherwise)."""
        if self.held:
            self.held = False
            try:
                if self.path.read_text() == self._owner:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        self._remove_made_folder()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _remove_stale_lock(self) -> None:
        """Delete the lock file if its owner is gone; raise RunFolderInUseError if it is alive."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return  # its owner has just released it
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (ValueError, KeyError, TypeError):
            raise RunFolderInUseError(
                f"{self.folder} has a lock file {self.path} that names no owner (another run may be "
                "writing it this instant); if no run uses this folder, delete the file"
            ) from None
        if host != socket.gethostname():
            raise RunFolderInUseError(
                f"{self.folder} is in use by process {pid} on host {host} (lock file {self.path}), "
                "which cannot be checked from here; if no run is going on there, delete the file"
            )
        if process_alive(pid):
            raise RunFolderInUseError(
                f"{self.folder} is in use by another run (process {pid}, lock file {self.path}): "
                "wait for it to finish, or choose another --out"
            )
        # Stale: taken over, unless another starting run has replaced it since it was read.
        try:
            if self.path.read_text() == text:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def _remove_made_folder(self) -> None:
        if self._made_folder:
            self._made_folder = False
            with contextlib.suppress(OSError):  # not empty: the run wrote in it
                self.folder.rmdir()
