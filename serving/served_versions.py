"""What request threads see: each model's served versions, states and labels.

TF Serving's ServableStateMonitor plus the manager's serving map: the model
manager (manager.py) records every state change and publishes the versions
that are AVAILABLE; requests resolve a model name, version or label to a
servable here and read version states for GetModelStatus. States are kept
after END, as the ServableStateMonitor keeps them.

Request threads read without a lock: every map is replaced, never mutated.
"""

import threading
import time
from typing import Callable, Dict, List, Optional

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving.errors import VersionStatus

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = (State.START, State.LOADING,
                                             State.AVAILABLE, State.UNLOADING,
                                             State.END)


class ServedVersions:
    """Resolves requests to servables; keeps every version's state."""

    def __init__(self,
                 on_versions_changed: Optional[Callable[[str, int],
                                                        None]] = None):
        """Starts empty.

        Args:
          on_versions_changed: Called with a model's name and its number of
            AVAILABLE versions whenever that set changes (a metrics gauge).
        """
        self._on_versions_changed = on_versions_changed
        self._write_lock = threading.Lock()
        self._states: Dict[str, Dict[int, VersionStatus]] = {}
        self._labels: Dict[str, Dict[str, int]] = {}
        self._serving: Dict[str, Dict[int, object]] = {}
        self._latest: Dict[str, object] = {}

    # ---------------------------------------------------- the manager's side

    def set_state(self,
                  name: str,
                  version: int,
                  state: int,
                  error: Optional[errors.ServingError] = None) -> None:
        """Records a version's new state."""
        with self._write_lock:
            states = dict(self._states.get(name, {}))
            states[version] = VersionStatus(version, State.Name(state), error)
            self._states = {**self._states, name: states}

    def publish(self, name: str, versions: Dict[int, object]) -> None:
        """Makes `versions` ({version: servable}) the ones `name` serves."""
        with self._write_lock:
            serving = dict(self._serving)
            latest = dict(self._latest)
            if versions:
                serving[name] = dict(versions)
                latest[name] = versions[max(versions)]
            else:
                serving.pop(name, None)
                latest.pop(name, None)
            self._serving, self._latest = serving, latest
        if self._on_versions_changed:
            self._on_versions_changed(name, len(versions))

    def checked_labels(self, models: List[model_server_config_pb2.ModelConfig],
                       allow_unavailable: bool) -> Dict[str, Dict[str, int]]:
        """The version labels of `models`, if each may be assigned.

        A label may name only an AVAILABLE version, unless
        `allow_unavailable` and the label is new or keeps its version.

        Raises:
          errors.ServingError: FAILED_PRECONDITION for a label that may not
            be assigned.
        """
        labels: Dict[str, Dict[str, int]] = {}
        for model in models:
            current = self._labels.get(model.name, {})
            states = self._states.get(model.name, {})
            for label, version in model.version_labels.items():
                status = states.get(version)
                available = (status is not None and
                             status.state == State.Name(AVAILABLE))
                unused = current.get(label, version) == version
                if not available and not (allow_unavailable and unused):
                    raise errors.failed_precondition(
                        f'Request to assign label to version {version} of '
                        f'model {model.name}, which is not currently '
                        f'available for inference')
                labels.setdefault(model.name, {})[label] = version
        return labels

    def set_labels(self, labels: Dict[str, Dict[str, int]]) -> None:
        """Replaces every model's labels ({model: {label: version}})."""
        self._labels = labels

    def status(self, name: str, version: int) -> Optional[VersionStatus]:
        """A version's latest state, or None if it never had one."""
        return self._states.get(name, {}).get(version)

    # ---------------------------------------------------- the requests' side

    def label_version(self, name: str, label: str) -> int:
        """The version a label names; INVALID_ARGUMENT if it names none."""
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise errors.invalid_argument(
                f'Unrecognized servable version label: {label}')
        return version

    def acquire(self,
                name: str,
                version: Optional[int] = None,
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
        request = (f'Latest({name})'
                   if version is None else f'Specific({name}, {version})')
        raise errors.not_found(f'Servable not found for request: {request}')

    def version_status(self,
                       name: str,
                       version: Optional[int] = None,
                       label: Optional[str] = None) -> List[VersionStatus]:
        """GetModelStatus: one version (by number or label) or all of them."""
        if label:
            version = self.label_version(name, label)
        states = self._states.get(name, {})
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
