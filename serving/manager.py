"""Model lifecycle: which versions are on disk, loaded, served and labelled.

This follows TF Serving's FileSystemStoragePathSource + AspiredVersionsManager
with the AvailabilityPreservingPolicy:

* Every `file_system_poll_wait_seconds` each model's base path is listed;
  numeric directories are versions, and the version policy (latest N, all,
  specific) picks the aspired ones. Unlike TF Serving, a directory counts
  only once it holds saved_model.pb(txt) and nothing in it changed for
  `settle_seconds`, so a half-copied export is never loaded.
* One manager thread acts on the aspired sets one step at a time: it unloads
  an un-aspired version only while another version keeps serving (or nothing
  is aspired any more), and otherwise loads the highest new aspired version.
  So a new version is loaded and warmed up before the old one goes, and a
  version that fails to load leaves the old one serving.
* Version states go START -> LOADING -> AVAILABLE -> UNLOADING -> END (END with
  an error status when loading failed) and are kept after END, as TF Serving's
  ServableStateMonitor keeps them.

Loading itself is injected (`loader`), so this module imports no TensorFlow.
"""

import dataclasses
import logging
import os
import re
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving import errors

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (
    State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END)

_VERSION_DIR = re.compile(r'\d+')
_MISSING_LOG_EVERY = 60.0

Loader = Callable[[str, int, str], object]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """A version's state as GetModelStatus reports it."""

    version: int
    state: int
    error: Optional[errors.ServingError] = None


class _Harness:
    """One version the manager knows about (TF Serving's LoaderHarness)."""

    def __init__(self, version: int, path: str):
        self.version = version
        self.path = path
        self.state = START
        self.aspired = True
        self.servable = None
        self.failed = False


class _Model:
    def __init__(self, config: model_server_config_pb2.ModelConfig):
        self.config = config
        self.removed = False
        self.aspired: Optional[Dict[int, str]] = None  # None until polled.
        self.harnesses: Dict[int, _Harness] = {}
        self.last_missing_log = 0.0


@dataclasses.dataclass
class ManagerOptions:
    poll_seconds: int = 1
    settle_seconds: float = 1.0
    max_load_retries: int = 5
    load_retry_interval: float = 60.0
    allow_labels_for_unavailable: bool = False
    on_versions_changed: Optional[Callable[[str, int], None]] = None


def _servable_id(name: str, version: int) -> str:
    return f'{{name: {name} version: {version}}}'


class ModelManager:
    """Loads, serves and unloads model versions; resolves requests to them."""

    def __init__(self, loader: Loader, options: ManagerOptions):
        self._loader = loader
        self._options = options
        self._cv = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()
        self._models: Dict[str, _Model] = {}
        self._states: Dict[str, Dict[int, VersionStatus]] = {}
        self._labels: Dict[str, Dict[str, int]] = {}
        self.current_config = model_server_config_pb2.ModelServerConfig()
        self._stopped = False
        # Read without the lock by request threads; replaced, never mutated.
        self._serving: Dict[str, Dict[int, object]] = {}
        self._latest: Dict[str, object] = {}
        self._manager_thread = threading.Thread(
            target=self._manage_loop, name='manager', daemon=True)
        self._manager_thread.start()
        self._poll_thread: Optional[threading.Thread] = None
        self._unsettled = False  # A poll saw a version still being written.

    # ----------------------------------------------------------------- config

    def reload(self, config: model_server_config_pb2.ModelServerConfig,
               alive: Callable[[], bool] = lambda: True) -> None:
        """Applies a ModelServerConfig like ServerCore::ReloadConfig.

        Checks the config and its labels, then adds, updates and removes
        models and waits until every newly added model's latest version is
        AVAILABLE (or failed). `alive` is polled while waiting; when it turns
        false the wait is abandoned with DEADLINE_EXCEEDED.

        Raises:
          errors.ServingError: the config is rejected (nothing changed), or a
            new model did not become available (the config stays applied).
        """
        config_lib.validate_model_server_config(config)
        with self._reload_lock:
            if config.WhichOneof('config') is None:
                logging.info('Taking no action for empty config.')
                return
            applied = model_server_config_pb2.ModelServerConfig()
            applied.CopyFrom(config)
            models = list(applied.model_config_list.config)
            with self._cv:
                labels = self._checked_labels(models)
                added = self._apply(models)
                self._labels = labels
                self.current_config = applied
            logging.info('Adding/updating models.')
            self.poll()
            self._start_polling()
            self._wait_available(added, alive)
            logging.info('Finished adding/updating models')

    def _checked_labels(self, models: List[model_server_config_pb2.ModelConfig]
                        ) -> Dict[str, Dict[str, int]]:
        labels: Dict[str, Dict[str, int]] = {}
        for model in models:
            current = self._labels.get(model.name, {})
            states = self._states.get(model.name, {})
            for label, version in model.version_labels.items():
                status = states.get(version)
                available = status is not None and status.state == AVAILABLE
                unused = current.get(label, version) == version
                if not available and not (
                        self._options.allow_labels_for_unavailable and unused):
                    raise errors.failed_precondition(
                        f'Request to assign label to version {version} of '
                        f'model {model.name}, which is not currently '
                        f'available for inference')
                labels.setdefault(model.name, {})[label] = version
        return labels

    def _apply(self, models: List[model_server_config_pb2.ModelConfig]
               ) -> List[str]:
        names = {m.name for m in models}
        added = []
        for model_config in models:
            model = self._models.get(model_config.name)
            if model is None or model.removed:
                if model is None:
                    model = self._models[model_config.name] = _Model(
                        model_config)
                model.removed = False
                added.append(model_config.name)
            model.config = model_config
        for name, model in self._models.items():
            if name not in names and not model.removed:
                logging.info('Removing model %s from the config', name)
                model.removed = True
                model.aspired = {}
        self._cv.notify_all()
        return added

    def _wait_available(self, names: List[str],
                        alive: Callable[[], bool]) -> None:
        failed: List[str] = []
        pending = list(names)
        with self._cv:
            while pending:
                if not alive():
                    raise errors.ServingError(
                        errors.Code.DEADLINE_EXCEEDED,
                        'Gave up waiting for models to become available: '
                        + ', '.join(pending))
                still = []
                for name in pending:
                    outcome = self._latest_outcome(name)
                    if outcome is None:
                        still.append(name)
                    elif outcome != AVAILABLE:
                        failed.append(name)
                pending = still
                if pending:
                    self._cv.wait(0.2)
        if failed:
            details = ', '.join(
                f'{{{name}: {self._failure(name)}}}' for name in failed)
            raise errors.ServingError(
                errors.Code.UNKNOWN,
                f'{len(failed)} model(s) did not become available: {details}')

    def _latest_outcome(self, name: str) -> Optional[int]:
        """AVAILABLE or END once the model's highest aspired version settled."""
        model = self._models.get(name)
        if model is None or not model.aspired:
            return None
        harness = model.harnesses.get(max(model.aspired))
        if harness is None:
            return None
        if harness.state == AVAILABLE:
            return AVAILABLE
        return END if harness.failed else None

    def _failure(self, name: str) -> str:
        model = self._models[name]
        status = self._states[name][max(model.aspired)]
        return str(status.error) if status.error else 'unloaded'

    # ---------------------------------------------------------------- polling

    def _start_polling(self) -> None:
        if self._poll_thread or self._options.poll_seconds <= 0:
            return
        self._poll_thread = threading.Thread(
            target=self._poll_loop, name='fs-poll', daemon=True)
        self._poll_thread.start()

    def _poll_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopped,
                                  self._options.poll_seconds)
                if self._stopped:
                    return
            try:
                self.poll()
            except Exception:  # pylint: disable=broad-except
                logging.exception('File system poll failed')

    def poll(self) -> None:
        """Lists each model's base path once; updates its aspired versions."""
        if self._options.poll_seconds < 0:
            return  # TF Serving: negative disables polling entirely.
        with self._cv:
            models = [(name, m.config, set(m.harnesses))
                      for name, m in self._models.items() if not m.removed]
        found = {}
        self._unsettled = False
        for name, model_config, known in models:
            found[name] = (model_config, self._aspired_on_disk(
                name, model_config, known))
        if self._unsettled and self._options.poll_seconds == 0:
            # Polling once: look again when the new directory has settled.
            timer = threading.Timer(self._options.settle_seconds, self.poll)
            timer.daemon = True
            timer.start()
        with self._cv:
            for name, (model_config, aspired) in found.items():
                model = self._models.get(name)
                if model is None or model.removed or aspired is None:
                    continue
                if model.config is model_config and aspired != model.aspired:
                    model.aspired = aspired
                    self._cv.notify_all()

    def _aspired_on_disk(self, name: str,
                         model_config: model_server_config_pb2.ModelConfig,
                         known: Set[int]) -> Optional[Dict[int, str]]:
        base = model_config.base_path
        try:
            children = os.listdir(base)
        except OSError:
            self._log_missing(name, f'Could not find base path {base} for '
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
        with self._cv:
            model = self._models.get(name)
            now = time.monotonic()
            if (model is None
                    or now - model.last_missing_log < _MISSING_LOG_EVERY):
                return
            model.last_missing_log = now
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
        settled = time.time() - newest >= self._options.settle_seconds
        self._unsettled = self._unsettled or not settled
        return settled

    # -------------------------------------------------------------- lifecycle

    def _set_state(self, name: str, harness: _Harness, state: int,
                   error: Optional[errors.ServingError] = None) -> None:
        """Records a state change; caller holds the lock."""
        harness.state = state
        self._states.setdefault(name, {})[harness.version] = VersionStatus(
            harness.version, state, error)
        self._cv.notify_all()

    def _publish(self, name: str) -> None:
        """Rebuilds the request-visible map of AVAILABLE versions of `name`."""
        model = self._models.get(name)
        versions = {} if model is None else {
            v: h.servable for v, h in model.harnesses.items()
            if h.state == AVAILABLE}
        serving = dict(self._serving)
        latest = dict(self._latest)
        if versions:
            serving[name] = versions
            latest[name] = versions[max(versions)]
        else:
            serving.pop(name, None)
            latest.pop(name, None)
        self._serving, self._latest = serving, latest
        if self._options.on_versions_changed:
            self._options.on_versions_changed(name, len(versions))

    def _next_action(self) -> Optional[Tuple[str, str, _Harness]]:
        """Picks one load or unload (AvailabilityPreservingPolicy); locked."""
        for name, model in list(self._models.items()):
            if model.aspired is None:
                continue
            for version, path in model.aspired.items():
                if version not in model.harnesses:
                    harness = model.harnesses[version] = _Harness(version, path)
                    self._set_state(name, harness, START)
            for version, harness in list(model.harnesses.items()):
                harness.aspired = version in model.aspired
                if not harness.aspired and harness.state == START:
                    del model.harnesses[version]
                    self._set_state(name, harness, END)
                elif not harness.aspired and harness.failed:
                    del model.harnesses[version]
            harnesses = model.harnesses.values()
            has_aspired = any(h.aspired for h in harnesses)
            aspired_serving = any(h.aspired and h.state == AVAILABLE
                                  for h in harnesses)
            unaspired_serving = [h for h in harnesses
                                 if not h.aspired and h.state == AVAILABLE]
            if unaspired_serving and (not has_aspired or aspired_serving or
                                      len(unaspired_serving) > 1):
                return 'unload', name, min(unaspired_serving,
                                           key=lambda h: h.version)
            new = [h for h in harnesses if h.aspired and h.state == START]
            if new:
                return 'load', name, max(new, key=lambda h: h.version)
            if model.removed and not model.harnesses:
                del self._models[name]
        return None

    def _manage_loop(self) -> None:
        while True:
            with self._cv:
                action = None
                while action is None:
                    if self._stopped:
                        return
                    action = self._next_action()
                    if action is None:
                        self._cv.wait(1.0)
            kind, name, harness = action
            try:
                if kind == 'load':
                    self._load(name, harness)
                else:
                    self._unload(name, harness)
            except Exception:  # pylint: disable=broad-except
                logging.exception('Unexpected error managing %s',
                                  _servable_id(name, harness.version))

    def _load(self, name: str, harness: _Harness) -> None:
        sid = _servable_id(name, harness.version)
        with self._cv:
            self._set_state(name, harness, LOADING)
        logging.info('Approving load for servable version %s', sid)
        logging.info('Loading servable version %s', sid)
        attempts = self._options.max_load_retries + 1
        error: Optional[errors.ServingError] = None
        for attempt in range(attempts):
            if attempt:
                with self._cv:
                    self._cv.wait_for(
                        lambda: self._stopped or not harness.aspired,
                        self._options.load_retry_interval)
                    if self._stopped or not harness.aspired:
                        error = errors.ServingError(
                            errors.Code.CANCELLED,
                            f'Loading of servable version {sid} was cancelled')
                        break
                logging.info('Retrying load of servable version %s '
                             '(attempt %d of %d)', sid, attempt + 1, attempts)
            try:
                servable = self._loader(name, harness.version, harness.path)
            except Exception as e:  # pylint: disable=broad-except
                error = errors.from_exception(e)
                logging.error('Loading servable: %s failed: %s', sid, error)
                continue
            with self._cv:
                harness.servable = servable
                self._set_state(name, harness, AVAILABLE)
                self._publish(name)
            logging.info('Successfully loaded servable version %s', sid)
            return
        with self._cv:
            harness.failed = True
            self._set_state(name, harness, END, error)

    def _unload(self, name: str, harness: _Harness) -> None:
        sid = _servable_id(name, harness.version)
        with self._cv:
            self._set_state(name, harness, UNLOADING)
            self._publish(name)
        logging.info('Quiescing servable version %s', sid)
        harness.servable.close()  # Waits for in-flight requests.
        harness.servable = None
        logging.info('Done quiescing servable version %s', sid)
        with self._cv:
            model = self._models.get(name)
            if model is not None:
                model.harnesses.pop(harness.version, None)
            self._set_state(name, harness, END)
        logging.info('Done unloading servable version %s', sid)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    # --------------------------------------------------------------- requests

    def label_version(self, name: str, label: str) -> int:
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise errors.invalid_argument(
                f'Unrecognized servable version label: {label}')
        return version

    def acquire(self, name: str, version: Optional[int] = None,
                label: Optional[str] = None):
        """Returns the servable a request asks for, with a reference held.

        The caller must `release()` it. Raises ServingError: INVALID_ARGUMENT
        for a missing name or unknown label, NOT_FOUND if not being served.
        """
        if not name:
            raise errors.invalid_argument('ModelSpec has no name specified.')
        if label:
            version = self.label_version(name, label)
        for _ in range(4):
            if version is None:
                servable = self._latest.get(name)
            else:
                servable = self._serving.get(name, {}).get(version)
            if servable is None:
                break
            if servable.acquire():
                return servable
            time.sleep(0.001)  # Being unloaded; a newer map is on its way.
        request = (f'Latest({name})' if version is None
                   else f'Specific({name}, {version})')
        raise errors.not_found(f'Servable not found for request: {request}')

    def version_status(self, name: str, version: Optional[int] = None,
                       label: Optional[str] = None) -> List[VersionStatus]:
        """GetModelStatus: one version (by number or label) or all of them."""
        if label:
            version = self.label_version(name, label)
        states = dict(self._states.get(name, {}))
        if version is not None:
            status = states.get(version)
            if status is None:
                raise errors.not_found(
                    f'Could not find version {version} of model {name}')
            return [status]
        if not states:
            raise errors.not_found(
                f'Could not find any versions of model {name}')
        return [states[v] for v in sorted(states, reverse=True)]
