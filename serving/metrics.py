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
"""

import bisect
import threading
from typing import Dict, List, Sequence, Tuple

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


class Metrics:
    """Thread-safe counters, gauges and histograms with a text exposition."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: Dict[str, Dict[Labels, float]] = {}
        self._gauges: Dict[str, Dict[Labels, float]] = {}
        self._histograms: Dict[str, Dict[Labels, _Histogram]] = {}

    def _add(self, name: str, labels: Labels, value: float = 1) -> None:
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[labels] = series.get(labels, 0) + value

    def _observe(self, name: str, limits: Sequence[float], labels: Labels,
                 value: float) -> None:
        with self._lock:
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

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: List[str] = []
        with self._lock:
            for kind, table in (('counter', self._counters), ('gauge',
                                                              self._gauges)):
                for name in sorted(table):
                    lines.append(f'# TYPE {name} {kind}')
                    for labels, value in sorted(table[name].items()):
                        lines.append(
                            f'{name}{_labels_text(labels)} {_number(value)}')
            for name in sorted(self._histograms):
                lines.append(f'# TYPE {name} histogram')
                for labels, hist in sorted(self._histograms[name].items()):
                    cumulative = 0
                    for i, limit in enumerate(list(hist.limits) + [None]):
                        cumulative += hist.counts[i]
                        le = '+Inf' if limit is None else '%.6g' % limit
                        bucket_labels = _labels_text(labels, 'le="%s"' % le)
                        lines.append(
                            f'{name}_bucket{bucket_labels} {cumulative}')
                    lines.append(f'{name}_sum{_labels_text(labels)} '
                                 f'{_number(hist.total)}')
                    lines.append(f'{name}_count{_labels_text(labels)} '
                                 f'{hist.count}')
        return '\n'.join(lines) + '\n'
