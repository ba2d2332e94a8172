"""The workdir as a resource: one writer at a time, created only by training.

``lock(workdir)`` takes an exclusive ``fcntl.flock`` on ``workdir/.lock`` for the duration
of a ``train`` or ``evaluate`` call. The kernel drops the lock when the process exits in any
way (``kill -9`` included), so a lock left by a dead process never blocks a new run; the
file keeps the holder's pid and host for the refusal message. ``evaluate`` takes the same
lock: it writes ``metrics.json`` and the method's artifacts, which a training run also
writes, and a checkpoint it reads could be deleted by the trainer's ``keep_checkpoints``,
so evaluating a workdir while it trains is refused. ``--mode=translate`` only reads
checkpoints and writes ``translate_*`` files, and takes no lock.

In a multi-process job only process 0 takes the lock.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import socket
from typing import Iterator

from jot.errors import UserError, UserFileNotFoundError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"  # the run's record (``jot.train.records``)


class WorkdirLocked(UserError):
    """Another process holds the workdir's lock."""


class NoRun(UserFileNotFoundError):
    """``workdir`` holds no run, or no checkpoint to read."""


def make(workdir: str) -> None:
    """Creates ``workdir`` (and parents); raises ``UserError`` when it cannot be created or written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to workdir {workdir!r} ({e.strerror or e}); choose a writable --workdir or fix the "
            "permissions of that path."
        ) from e


def require_run(workdir: str) -> None:
    """Raises ``NoRun`` ("no run at ...") unless ``workdir`` holds a run
    (a ``config.json`` or a ``checkpoints/`` folder); creates nothing."""
    if os.path.isfile(os.path.join(workdir, CONFIG_FILE)) or os.path.isdir(os.path.join(workdir, "checkpoints")):
        return
    what = "does not exist" if not os.path.exists(workdir) else "has no config.json and no checkpoints/"
    raise NoRun(
        f"no run at {workdir!r}: the path {what}, so there is no checkpoint to evaluate. Check the --workdir "
        "path, or train first with --mode=train."
    )


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        text = ""
    return text or "another process (pid unknown)"


@contextlib.contextmanager
def lock(workdir: str, *, enabled: bool = True) -> Iterator[None]:
    """Holds the exclusive lock of ``workdir`` (see the module docstring); raises
    ``WorkdirLocked`` naming the workdir and the holder's pid and host when it is taken.
    ``enabled=False`` is a no-op (processes other than 0)."""
    if not enabled:
        yield
        return
    path = os.path.join(workdir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise UserError(
            f"cannot create the lock file {path!r} ({e.strerror or e}); choose a writable --workdir."
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"cannot lock {path!r} ({e.strerror or e}); the filesystem of --workdir may not support "
                    "file locks: use a workdir on a local disk."
                ) from e
            raise WorkdirLocked(
                f"workdir {workdir!r} is in use by {_holder(path)}; wait for that run to finish or stop it "
                "(it saves a checkpoint on SIGTERM), or use another --workdir."
            ) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} (since {started})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
