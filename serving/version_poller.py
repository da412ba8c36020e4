"""Which versions of each model are on disk.

As TF Serving's FileSystemStoragePathSource finds them.

Every `poll_seconds` each model's base path is listed; numeric directories
are versions, and the model's version policy (latest N, all, specific) picks
the aspired ones. Unlike TF Serving, a directory counts only once it holds
saved_model.pb(txt) and nothing in it changed for `settle_seconds`, so a
half-copied export is never loaded. `poll_seconds` 0 polls once (and again
when a new directory settles); negative never polls.
"""

import logging
import os
import re
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from tensorflow_serving.config import model_server_config_pb2

ModelConfig = model_server_config_pb2.ModelConfig
# {model name: (the config it was polled with, {version: directory})}.
AspiredVersions = Dict[str, Tuple[ModelConfig, Dict[int, str]]]

_VERSION_DIR = re.compile(r'\d+')
_MISSING_LOG_EVERY = 60.0


class VersionPoller:
    """Lists the models' base paths and reports their aspired versions."""

    def __init__(self, models: Callable[[], List[Tuple[str, ModelConfig,
                                                       Set[int]]]],
                 set_aspired: Callable[[AspiredVersions], None],
                 poll_seconds: int, settle_seconds: float):
        """Polls nothing until `poll()` or `start()`.

        Args:
          models: Returns (name, config, versions already known) per model
            to poll; a known version is aspired without waiting to settle.
          set_aspired: Takes each polled model's aspired versions.
          poll_seconds: The time between polls.
          settle_seconds: How long a version directory must stay unchanged.
        """
        self._models = models
        self._set_aspired = set_aspired
        self._poll_seconds = poll_seconds
        self._settle_seconds = settle_seconds
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_missing_log: Dict[str, float] = {}
        self._unsettled = False  # A poll saw a version still being written.

    def start(self) -> None:
        """Polls every `poll_seconds` on a thread (once; if positive)."""
        if self._thread or self._poll_seconds <= 0:
            return
        self._thread = threading.Thread(target=self._poll_loop,
                                        name='fs-poll',
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the polling thread."""
        self._stopped.set()

    def _poll_loop(self) -> None:
        while not self._stopped.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception:  # pylint: disable=broad-except
                logging.exception('File system poll failed')

    def poll(self) -> None:
        """Lists each model's base path once; reports its aspired versions."""
        if self._poll_seconds < 0:
            return  # TF Serving: negative disables polling entirely.
        found: AspiredVersions = {}
        self._unsettled = False
        for name, model_config, known in self._models():
            aspired = self._aspired_on_disk(name, model_config, known)
            if aspired is not None:
                found[name] = (model_config, aspired)
        if self._unsettled and self._poll_seconds == 0:
            # Polling once: look again when the new directory has settled.
            timer = threading.Timer(self._settle_seconds, self.poll)
            timer.daemon = True
            timer.start()
        self._set_aspired(found)

    def _aspired_on_disk(self, name: str, model_config: ModelConfig,
                         known: Set[int]) -> Optional[Dict[int, str]]:
        base = model_config.base_path
        try:
            children = os.listdir(base)
        except OSError:
            self._log_missing(
                name, f'Could not find base path {base} for '
                f'servable {name}')
            return None
        versions: Dict[int, str] = {}
        for child in sorted(children):
            if _VERSION_DIR.fullmatch(child):
                versions.setdefault(int(child), os.path.join(base, child))

        def ready(version: int) -> bool:
            return version in known or self._complete(versions[version])

        policy = model_config.model_version_policy
        choice = policy.WhichOneof('policy_choice')
        if choice == 'all':
            aspired = [v for v in versions if ready(v)]
        elif choice == 'specific':
            wanted = set(policy.specific.versions)
            aspired = [v for v in versions if v in wanted and ready(v)]
        else:
            count = policy.latest.num_versions if choice == 'latest' else 1
            aspired = []
            for version in sorted(versions, reverse=True):
                if len(aspired) >= max(count, 1):
                    break
                if ready(version):
                    aspired.append(version)
        if not aspired:
            self._log_missing(
                name, f'No versions of servable {name} found under base path '
                f'{base}. Did you forget to name your leaf directory as '
                f"a number (eg. '/1/')?")
        return {v: versions[v] for v in aspired}

    def _log_missing(self, name: str, message: str) -> None:
        """Logs at most once a minute per model (polls are every second)."""
        now = time.monotonic()
        if now - self._last_missing_log.get(name, -_MISSING_LOG_EVERY) \
                < _MISSING_LOG_EVERY:
            return
        self._last_missing_log[name] = now
        logging.warning(message)

    def _complete(self, path: str) -> bool:
        """A version dir is loadable: has a SavedModel and stopped changing."""
        if not (os.path.isfile(os.path.join(path, 'saved_model.pb')) or
                os.path.isfile(os.path.join(path, 'saved_model.pbtxt'))):
            return False
        newest = 0.0
        try:
            for root, _, files in os.walk(path):
                for entry in [root] + [os.path.join(root, f) for f in files]:
                    st = os.stat(entry)
                    newest = max(newest, st.st_mtime, st.st_ctime)
        except OSError:
            return False
        settled = time.time() - newest >= self._settle_seconds
        self._unsettled = self._unsettled or not settled
        return settled
