"""Model lifecycle: loading and unloading the versions a config aspires to.

This follows TF Serving's AspiredVersionsManager with the
AvailabilityPreservingPolicy. The aspired versions come from the version
poller (version_poller.py, TF Serving's FileSystemStoragePathSource), and
what requests see is published to the served versions (served_versions.py).

* One manager thread acts on the aspired sets one step at a time: it unloads
  an un-aspired version only while another version keeps serving (or nothing
  is aspired any more), and otherwise loads the highest new aspired version.
  So a new version is loaded and warmed up before the old one goes, and a
  version that fails to load leaves the old one serving.
* Version states go START -> LOADING -> AVAILABLE -> UNLOADING -> END (END with
  an error status when loading failed).

Loading itself is injected (`loader`), so this module imports no TensorFlow.
"""

import dataclasses
import logging
import threading
from typing import Callable, Dict, List, Optional, Set, Tuple

from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving import errors
from serving import served_versions
from serving import version_poller
from serving.served_versions import AVAILABLE
from serving.served_versions import END
from serving.served_versions import LOADING
from serving.served_versions import START
from serving.served_versions import UNLOADING

Loader = Callable[[str, int, str], object]


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


@dataclasses.dataclass
class ManagerOptions:
    """How the manager polls, loads, retries and swaps versions."""
    poll_seconds: int = 1
    settle_seconds: float = 1.0
    max_load_retries: int = 5
    load_retry_interval: float = 60.0
    allow_labels_for_unavailable: bool = False


def _servable_id(name: str, version: int) -> str:
    return f'{{name: {name} version: {version}}}'


class ModelManager:
    """Loads and unloads model versions; publishes them to `served`."""

    def __init__(self, loader: Loader, served: served_versions.ServedVersions,
                 options: ManagerOptions):
        """Starts the manager thread; nothing is loaded before `reload()`.

        Args:
          loader: Loads (name, version, path) into a servable.
          served: Where the versions and their states are published.
          options: Polling, retry and label settings.
        """
        self._loader = loader
        self._served = served
        self._options = options
        self._cv = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()
        self._models: Dict[str, _Model] = {}
        self.current_config = model_server_config_pb2.ModelServerConfig()
        self._stopped = False
        self._poller = version_poller.VersionPoller(self._models_to_poll,
                                                    self._set_aspired,
                                                    options.poll_seconds,
                                                    options.settle_seconds)
        self._manager_thread = threading.Thread(target=self._manage_loop,
                                                name='manager',
                                                daemon=True)
        self._manager_thread.start()

    # ----------------------------------------------------------------- config

    def reload(self,
               config: model_server_config_pb2.ModelServerConfig,
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
                labels = self._served.checked_labels(
                    models, self._options.allow_labels_for_unavailable)
                added = self._apply(models)
                self._served.set_labels(labels)
                self.current_config = applied
            logging.info('Adding/updating models.')
            self._poller.poll()
            self._poller.start()
            self._wait_available(added, alive)
            logging.info('Finished adding/updating models')

    def _apply(self,
               models: List[model_server_config_pb2.ModelConfig]) -> List[str]:
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

    def _wait_available(self, names: List[str], alive: Callable[[],
                                                                bool]) -> None:
        failed: List[str] = []
        pending = list(names)
        with self._cv:
            while pending:
                if not alive():
                    raise errors.ServingError(
                        errors.Code.DEADLINE_EXCEEDED,
                        'Gave up waiting for models to become available: ' +
                        ', '.join(pending))
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
        status = self._served.status(name, max(model.aspired))
        return str(status.error) if status.error else 'unloaded'

    # ---------------------------------------------------------------- polling

    def poll(self) -> None:
        """Lists each model's base path once; updates its aspired versions."""
        self._poller.poll()

    def _models_to_poll(
        self
    ) -> List[Tuple[str, model_server_config_pb2.ModelConfig, Set[int]]]:
        with self._cv:
            return [(name, m.config, set(m.harnesses))
                    for name, m in self._models.items()
                    if not m.removed]

    def _set_aspired(self, found: version_poller.AspiredVersions) -> None:
        with self._cv:
            for name, (model_config, aspired) in found.items():
                model = self._models.get(name)
                if model is None or model.removed:
                    continue
                if model.config is model_config and aspired != model.aspired:
                    model.aspired = aspired
                    self._cv.notify_all()

    # -------------------------------------------------------------- lifecycle

    def _set_state(self,
                   name: str,
                   harness: _Harness,
                   state: int,
                   error: Optional[errors.ServingError] = None) -> None:
        """Records a state change; caller holds the lock."""
        harness.state = state
        self._served.set_state(name, harness.version, state, error)
        self._cv.notify_all()

    def _publish(self, name: str) -> None:
        """Publishes the AVAILABLE versions of `name`; caller holds the lock."""
        model = self._models.get(name)
        self._served.publish(name, {} if model is None else {
            v: h.servable
            for v, h in model.harnesses.items()
            if h.state == AVAILABLE
        })

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
            aspired_serving = any(
                h.aspired and h.state == AVAILABLE for h in harnesses)
            unaspired_serving = [
                h for h in harnesses if not h.aspired and h.state == AVAILABLE
            ]
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
                logging.info(
                    'Retrying load of servable version %s '
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
        """Ends the manager and polling threads (loaded versions stay)."""
        self._poller.stop()
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
