"""Helpers every benchmark module shares: subprocesses, JSON lines, load.

The benchmarks run the pipeline and the by-hand script as child processes,
so that each wall time includes the interpreter's and TensorFlow's start-up,
exactly as a user running either would see it.
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from common import environment

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / 'bench' / 'results'

# The environment the Makefile gives every command.
CHILD_ENV = {
    **environment.LEGACY_KERAS_ENV,
    'TF_CPP_MIN_LOG_LEVEL': '2',
    'PYTHONWARNINGS': 'ignore::FutureWarning',
}


def python() -> str:
    """The interpreter running the benchmark (the project's venv)."""
    return sys.executable


def load_average() -> List[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux.
        return []


def children_cpu_seconds() -> float:
    """User + system seconds of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def last_json_line(text: str) -> Dict[str, Any]:
    """The last line of `text` that parses as a JSON object.

    Raises:
        ValueError: if no line does.
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith('{') and line.endswith('}'):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError('no JSON line in the output')


def run_json(args: Sequence[str],
             log_path: Optional[Path] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
    """Runs `python -m ...` args in the repository; returns its JSON line.

    The child's stderr (progress lines, logs) goes to `log_path` when given.
    The result gains `outer_wall_seconds` (process start to exit, as measured
    here), `cpu_seconds` (user + system time of the child and its own
    children) and `load_before` / `load_after` (load averages).

    Args:
        args: Arguments after the interpreter, e.g. ['-m', 'pipeline', ...].
        log_path: Where to keep the child's stderr.
        timeout: Seconds before the child is killed.

    Raises:
        RuntimeError: if the child fails or prints no JSON line.
    """
    env = {**os.environ, **CHILD_ENV}
    load_before = load_average()
    cpu_before = children_cpu_seconds()
    started = time.monotonic()
    stderr_file = open(log_path, 'w', encoding='utf-8') if log_path else None
    try:
        completed = subprocess.run(
            [python(), *args],
            cwd=REPO_ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=stderr_file if stderr_file else subprocess.PIPE,
            timeout=timeout,
            check=False)
    finally:
        if stderr_file:
            stderr_file.close()
    wall = time.monotonic() - started
    cpu = children_cpu_seconds() - cpu_before
    if completed.returncode != 0:
        tail = (completed.stderr or '')[-2000:] if not log_path else (
            Path(log_path).read_text(encoding='utf-8')[-2000:])
        raise RuntimeError(f'{" ".join(args)} exited with '
                           f'{completed.returncode}:\n{tail}')
    result = last_json_line(completed.stdout)
    result['outer_wall_seconds'] = round(wall, 1)
    result['cpu_seconds'] = round(cpu, 1)
    result['load_before'] = load_before
    result['load_after'] = load_average()
    return result


class Stopwatch:
    """Named wall-clock phases: `with watch('fit'): ...`."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._name = ''
        self._started = 0.0

    def __call__(self, name: str) -> 'Stopwatch':
        self._name = name
        return self

    def __enter__(self) -> 'Stopwatch':
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds[self._name] = round(
            self.seconds.get(self._name, 0.0) + time.monotonic() -
            self._started, 2)


def trained_epochs(run: Optional[Dict[str, Any]]) -> int:
    """The epochs a pipeline run's Trainer trained (0: no training report)."""
    return len(((run or {}).get('training') or {}).get('epoch_seconds') or [])


def write_results(path: str, results: Dict[str, Any]) -> None:
    """Writes `results` as indented JSON to `path`, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
