"""Prometheus metrics, named and labelled as TF Serving exports them.

TF Serving's metric paths ("/tensorflow/serving/request_count") become
Prometheus names by replacing "/" with ":"; latencies are in microseconds.
Exported:

  :tensorflow:serving:request_count{model_name,status}            counter
  :tensorflow:serving:request_latency{model_name,API,entrypoint}  histogram
  :tensorflow:serving:runtime_latency{model_name,API,runtime}     histogram
  :tensorflow:serving:request_example_counts{model}               histogram
  :tensorflow:serving:request_example_count_total{model}          counter
  :tensorflow:serving:batching_session:queuing_latency{thread_pool_name}
  :tensorflow:serving:batching_session:input_batch_size{model_name}
  :tensorflow:serving:batching_session:processed_batch_size{model_name}
  :tensorflow:serving:batching_session:padding_size{model_name,execution_batch_size}
  :tensorflow:cc:saved_model:load_attempt_count{model_path,status} counter
  :tensorflow:cc:saved_model:load_latency{model_path}             counter
  :tensorflow:serving:model_warmup_latency{model_path,status}     histogram

Additions of this server (not in TF Serving):
  :tensorflow:serving:model_versions_available{model_name}        gauge
  :tensorflow:serving:model_warmup_request_count{model_path}      counter

With --server_processes N, a scrape reaches one process, which answers for
all (`Metrics.share`): counters and histograms are the sums over every
process, its own live and the others' as each last wrote them to a shared
directory (every half second while they change, and on a graceful stop);
gauges are the answering process's own. A process that replaces one that
died starts from what its predecessor last wrote, so totals do not drop.
"""

import bisect
import json
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

Labels = Tuple[Tuple[str, str], ...]


def exponential_buckets(scale: float, growth: float, count: int) -> List[float]:
    """monitoring::Buckets::Exponential bucket limits."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return limits


_LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)
_QUEUING_BUCKETS = exponential_buckets(100, 1.2, 52)
_SIZE_BUCKETS = exponential_buckets(1, 2, 14)
_EXAMPLE_BUCKETS = exponential_buckets(1, 2, 15)

_PREFIX = ':tensorflow:serving:'
_REQUEST_COUNT = _PREFIX + 'request_count'
_REQUEST_LATENCY = _PREFIX + 'request_latency'
_RUNTIME_LATENCY = _PREFIX + 'runtime_latency'
_EXAMPLE_COUNTS = _PREFIX + 'request_example_counts'
_EXAMPLE_TOTAL = _PREFIX + 'request_example_count_total'
_QUEUING = _PREFIX + 'batching_session:queuing_latency'
_INPUT_BATCH = _PREFIX + 'batching_session:input_batch_size'
_PROCESSED_BATCH = _PREFIX + 'batching_session:processed_batch_size'
_PADDING = _PREFIX + 'batching_session:padding_size'
_LOAD_ATTEMPTS = ':tensorflow:cc:saved_model:load_attempt_count'
_LOAD_LATENCY = ':tensorflow:cc:saved_model:load_latency'
_WARMUP_LATENCY = _PREFIX + 'model_warmup_latency'
_WARMUP_REQUESTS = _PREFIX + 'model_warmup_request_count'
_VERSIONS = _PREFIX + 'model_versions_available'

_BATCH_POOL = (('thread_pool_name', 'model_server_batch_threads'),)
_SHARE_INTERVAL_SECONDS = 0.5
_SHARED_FILE = 'process-{}.json'


class _Histogram:
    __slots__ = ('limits', 'counts', 'total', 'count')

    def __init__(self, limits: Sequence[float]):
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.limits, value)] += 1
        self.total += value
        self.count += 1


def _labels_text(labels: Labels, extra: str = '') -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return '{' + ','.join(parts) + '}' if parts else ''


def _escape(value: str) -> str:
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return '%.6g' % value


Counters = Dict[str, Dict[Labels, float]]
Histograms = Dict[str, Dict[Labels, _Histogram]]


def _snapshot(counters: Counters, histograms: Histograms) -> Dict[str, Any]:
    """Counters and histograms as JSON-ready lists."""
    return {
        'counters': [[name, labels, value]
                     for name, series in counters.items()
                     for labels, value in series.items()],
        'histograms': [[
            name, labels,
            list(h.limits), h.counts, h.total, h.count
        ]
                       for name, series in histograms.items()
                       for labels, h in series.items()],
    }


def _add_snapshot(snapshot: Dict[str, Any], counters: Counters,
                  histograms: Histograms) -> None:
    """Adds a `_snapshot` (read back from JSON) into the tables."""
    for name, labels, value in snapshot['counters']:
        key = tuple(tuple(pair) for pair in labels)
        series = counters.setdefault(name, {})
        series[key] = series.get(key, 0) + value
    for name, labels, limits, counts, total, count in snapshot['histograms']:
        key = tuple(tuple(pair) for pair in labels)
        series = histograms.setdefault(name, {})
        histogram = series.get(key)
        if histogram is None:
            histogram = series[key] = _Histogram(limits)
        if len(histogram.counts) != len(counts):
            continue  # Another build's buckets: not comparable.
        histogram.counts = [a + b for a, b in zip(histogram.counts, counts)]
        histogram.total += total
        histogram.count += count


def _read_snapshot(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Metrics:
    """Thread-safe counters, gauges and histograms with a text exposition."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: Counters = {}
        self._gauges: Dict[str, Dict[Labels, float]] = {}
        self._histograms: Histograms = {}
        self._changes = 0
        self._shared_dir: Optional[str] = None
        self._shared_file = ''
        self._stop_sharing = threading.Event()
        self._sharer: Optional[threading.Thread] = None

    def share(self, directory: str, index: int) -> None:
        """Sums the other processes' metrics into this one's exposition.

        Writes this process's counters and histograms to
        `<directory>/process-<index>.json` every half second while they
        change (and on `close`); starts from that file when it exists (this
        process replaces one that died).
        """
        self._shared_dir = directory
        self._shared_file = os.path.join(directory, _SHARED_FILE.format(index))
        previous = _read_snapshot(self._shared_file)
        if previous is not None:
            with self._lock:
                _add_snapshot(previous, self._counters, self._histograms)
        self._sharer = threading.Thread(target=self._share_loop,
                                        name='metrics-share',
                                        daemon=True)
        self._sharer.start()

    def close(self) -> None:
        """Stops sharing, writing this process's metrics one last time."""
        if self._sharer is not None:
            self._stop_sharing.set()
            self._sharer.join()
            self._sharer = None

    def _share_loop(self) -> None:
        written = -1
        while True:
            stopping = self._stop_sharing.wait(_SHARE_INTERVAL_SECONDS)
            with self._lock:
                changes = self._changes
                snapshot = (None if changes == written else _snapshot(
                    self._counters, self._histograms))
            if snapshot is not None:
                try:
                    temporary = self._shared_file + f'.{os.getpid()}.tmp'
                    with open(temporary, 'w', encoding='utf-8') as f:
                        json.dump(snapshot, f)
                    os.replace(temporary, self._shared_file)
                    written = changes
                except OSError as e:
                    logging.warning('Cannot share metrics in %s: %s',
                                    self._shared_dir, e)
            if stopping:
                return

    def _add(self, name: str, labels: Labels, value: float = 1) -> None:
        with self._lock:
            self._changes += 1
            series = self._counters.setdefault(name, {})
            series[labels] = series.get(labels, 0) + value

    def _observe(self, name: str, limits: Sequence[float], labels: Labels,
                 value: float) -> None:
        with self._lock:
            self._changes += 1
            series = self._histograms.setdefault(name, {})
            histogram = series.get(labels)
            if histogram is None:
                histogram = series[labels] = _Histogram(limits)
            histogram.observe(value)

    def request(self,
                model_name: str,
                api: str,
                entrypoint: str,
                status: str,
                micros: float,
                counted: bool = True) -> None:
        """Records one request's outcome and latency."""
        if counted:
            self._add(_REQUEST_COUNT,
                      (('model_name', model_name), ('status', status)))
        self._observe(_REQUEST_LATENCY, _LATENCY_BUCKETS,
                      (('model_name', model_name), ('API', api),
                       ('entrypoint', entrypoint)), micros)

    def runtime(self, model_name: str, api: str, micros: float) -> None:
        self._observe(_RUNTIME_LATENCY, _LATENCY_BUCKETS,
                      (('model_name', model_name), ('API', api),
                       ('runtime', 'TF1')), micros)

    def examples(self, model_name: str, count: int) -> None:
        labels = (('model', model_name),)
        self._observe(_EXAMPLE_COUNTS, _EXAMPLE_BUCKETS, labels, count)
        self._add(_EXAMPLE_TOTAL, labels, count)

    def observe_batch_input(self, model_name: str, rows: int) -> None:
        self._observe(_INPUT_BATCH, _SIZE_BUCKETS,
                      (('model_name', model_name),), rows)

    def observe_batch_queuing(self, micros: float) -> None:
        self._observe(_QUEUING, _QUEUING_BUCKETS, _BATCH_POOL, micros)

    def observe_batch_processed(self, model_name: str, size: int,
                                padding: int) -> None:
        self._observe(_PROCESSED_BATCH, _SIZE_BUCKETS,
                      (('model_name', model_name),), size)
        self._observe(_PADDING, _SIZE_BUCKETS,
                      (('model_name', model_name),
                       ('execution_batch_size', str(size))), padding)

    def load_attempt(self, path: str, ok: bool, micros: float) -> None:
        self._add(_LOAD_ATTEMPTS, (('model_path', path),
                                   ('status', 'success' if ok else 'fail')))
        if ok:
            self._add(_LOAD_LATENCY, (('model_path', path),), micros)

    def warmup(self, path: str, status: str, micros: float,
               requests: int) -> None:
        self._observe(_WARMUP_LATENCY, _LATENCY_BUCKETS,
                      (('model_path', path), ('status', status)), micros)
        self._add(_WARMUP_REQUESTS, (('model_path', path),), requests)

    def versions_available(self, model_name: str, count: int) -> None:
        with self._lock:
            self._gauges.setdefault(_VERSIONS,
                                    {})[(('model_name', model_name),)] = count

    def _others(self) -> List[Dict[str, Any]]:
        """The other processes' last snapshots (none unless shared)."""
        if self._shared_dir is None:
            return []
        try:
            names = sorted(os.listdir(self._shared_dir))
        except OSError:
            return []
        own = os.path.basename(self._shared_file)
        paths = [
            os.path.join(self._shared_dir, name)
            for name in names
            if name.endswith('.json') and name != own
        ]
        return [s for s in map(_read_snapshot, paths) if s is not None]

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        others = self._others()
        with self._lock:
            if others:
                counters: Counters = {}
                histograms: Histograms = {}
                for snapshot in [_snapshot(self._counters, self._histograms)
                                ] + others:
                    _add_snapshot(snapshot, counters, histograms)
            else:
                counters, histograms = self._counters, self._histograms
            return _exposition(counters, self._gauges, histograms)


def _exposition(counters: Counters, gauges: Dict[str, Dict[Labels, float]],
                histograms: Histograms) -> str:
    """The Prometheus text format of the tables."""
    lines: List[str] = []
    for kind, table in (('counter', counters), ('gauge', gauges)):
        for name in sorted(table):
            lines.append(f'# TYPE {name} {kind}')
            for labels, value in sorted(table[name].items()):
                lines.append(f'{name}{_labels_text(labels)} {_number(value)}')
    for name in sorted(histograms):
        lines.append(f'# TYPE {name} histogram')
        for labels, hist in sorted(histograms[name].items()):
            cumulative = 0
            for i, limit in enumerate(list(hist.limits) + [None]):
                cumulative += hist.counts[i]
                le = '+Inf' if limit is None else '%.6g' % limit
                bucket_labels = _labels_text(labels, 'le="%s"' % le)
                lines.append(f'{name}_bucket{bucket_labels} {cumulative}')
            lines.append(f'{name}_sum{_labels_text(labels)} '
                         f'{_number(hist.total)}')
            lines.append(f'{name}_count{_labels_text(labels)} {hist.count}')
    return '\n'.join(lines) + '\n'
