"""The lock that keeps two runs of one pipeline from overlapping.

Every run takes it: the scheduler's, manual ``pipeline run``s, and cron jobs
through ``flock(1)`` on the same file (docs/scheduling.md).
"""

import fcntl
import logging
import os
from typing import Union

LOCK_FILENAME = 'pipeline.lock'

_LOG = logging.getLogger(__name__)


class RunLock:
    """An exclusive ``flock`` on a file, shared by all pipeline processes.

    ``flock`` locks belong to the open file, so two ``RunLock`` objects on one
    path exclude each other even inside one process, and the lock is freed if
    the holder dies. The file is never deleted (that would race with waiters);
    the holder's pid is written into it for diagnostics.

    Args:
        path: The lock file; created if missing.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        self._file = None

    def acquire(self, blocking: bool = False) -> bool:
        """Takes the lock; False if another holder has it and not blocking."""
        if self._file is not None:
            raise RuntimeError(f'{self.path} is already held by this RunLock')
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        lock_file = open(self.path, 'a+')
        try:
            flags = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(lock_file.fileno(), flags)
        except BlockingIOError:
            lock_file.close()
            return False
        except BaseException:
            lock_file.close()
            raise
        lock_file.truncate(0)
        lock_file.write(f'pid {os.getpid()}\n')
        lock_file.flush()
        self._file = lock_file
        return True

    def release(self) -> None:
        """Releases the lock if held."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str:
        """Describes the current holder (as the file says it), best effort."""
        try:
            with open(self.path) as lock_file:
                return lock_file.read().strip() or 'an unknown process'
        except OSError:
            return 'an unknown process'

    def __enter__(self) -> 'RunLock':
        if not self.acquire():
            _LOG.info('pipeline lock %s is held by %s; waiting for it',
                      self.path, self.holder())
            self.acquire(blocking=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_path(state_dir: Union[str, os.PathLike]) -> str:
    """Returns the lock file every run of one pipeline shares."""
    return os.path.join(os.fspath(state_dir), LOCK_FILENAME)
