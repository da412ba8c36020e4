"""Server-side batching: TF Serving's SharedBatchScheduler + BatchingSession.

Concurrent requests that run the same servable version, signature and
outputs are queued together. A batch is closed when it reaches
`max_batch_size` rows or when its oldest request has waited
`batch_timeout_micros`, and is then run by one of `num_batch_threads`
threads: inputs are concatenated along dimension 0, padded up to the next
`allowed_batch_sizes` entry by repeating the first row, run once, and the
outputs are split back per request.

Requests whose inputs differ in a non-batch dimension never share a queue
unless `pad_variable_length_inputs` is set; then each input is padded to the
batch's largest shape with its own first element, as TF Serving pads.
Requests larger than `max_batch_size` are split across batches.
"""

import collections
import threading
import time
from concurrent import futures
from typing import Callable, Deque, Dict, Hashable, List, Optional, Tuple

import numpy as np

from serving import config
from serving import errors

Arrays = Dict[str, np.ndarray]
RunFn = Callable[[Arrays], Arrays]


class _Task:
    """One request's rows waiting for a batch."""

    __slots__ = ('inputs', 'rows', 'enqueued', 'future')

    def __init__(self, inputs: Arrays, rows: int):
        self.inputs = inputs
        self.rows = rows
        self.enqueued = time.monotonic()
        self.future: futures.Future = futures.Future()


class _Queue:
    __slots__ = ('model_name', 'run', 'options', 'tasks', 'rows')

    def __init__(self, model_name: str, run: RunFn,
                 options: config.BatchingOptions):
        self.model_name = model_name
        self.run = run
        self.options = options
        self.tasks: Deque[_Task] = collections.deque()
        self.rows = 0


class BatchScheduler:
    """Batches calls to signature functions across request threads."""

    def __init__(self, options: config.BatchingOptions, metrics=None):
        self.options = options
        self._metrics = metrics
        self._cv = threading.Condition()
        self._queues: Dict[Hashable, _Queue] = {}
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f'batch-{i}', daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def run(self,
            model_name: str,
            key: Hashable,
            run: RunFn,
            inputs: Arrays,
            options: Optional[config.BatchingOptions] = None) -> Arrays:
        """Runs `run(inputs)` as part of a batch; returns this request's rows.

        Blocking form of `submit`.
        """
        return self.submit(model_name, key, run, inputs, options).result()

    def submit(
            self,
            model_name: str,
            key: Hashable,
            run: RunFn,
            inputs: Arrays,
            options: Optional[config.BatchingOptions] = None) -> futures.Future:
        """Queues `inputs` for a batched `run`; the future gets this one's rows.

        `key` identifies what may be batched together (servable version,
        signature, outputs); shapes are added to it here. `options` overrides
        the server's batching parameters for this queue (per-model
        batching_params.pbtxt); its num_batch_threads is not used.

        Raises:
          errors.ServingError: the inputs cannot be batched, or the queue is
            full (UNAVAILABLE).
        """
        options = options or self.options
        rows = _batch_rows(inputs)
        if self._metrics:
            self._metrics.observe_batch_input(model_name, rows)
        if not options.pad_variable_length_inputs:
            key = (key,
                   tuple(
                       sorted((k, v.shape[1:], v.dtype.str)
                              for k, v in inputs.items())))
        else:
            key = (
                key,
                tuple(
                    sorted(
                        (k, v.ndim, v.dtype.str) for k, v in inputs.items())))
        if rows == 0:
            done: futures.Future = futures.Future()
            done.set_result(run(inputs))
            return done
        limit = options.max_batch_size
        chunks = [inputs] if rows <= limit else [{
            k: v[start:start + limit] for k, v in inputs.items()
        } for start in range(0, rows, limit)]
        tasks = [
            _Task(chunk, min(limit, rows - i * limit))
            for i, chunk in enumerate(chunks)
        ]
        with self._cv:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(model_name, run, options)
            pending = -(-(queue.rows + rows) // limit)
            if pending > options.max_enqueued_batches:
                raise errors.ServingError(
                    errors.Code.UNAVAILABLE,
                    'The batch scheduling queue to which this task was '
                    'submitted is full')
            for task in tasks:
                queue.tasks.append(task)
                queue.rows += task.rows
            self._cv.notify()
        if len(tasks) == 1:
            return tasks[0].future
        return _joined([t.future for t in tasks])

    def _take_batch(self) -> Tuple[Optional[_Queue], List[_Task], float]:
        """Pops a ready batch; else returns how long to wait for one."""
        now = time.monotonic()
        best: Optional[_Queue] = None
        wait = 3600.0
        for key, queue in list(self._queues.items()):
            if not queue.tasks:
                del self._queues[key]  # Also drops the servable it refers to.
                continue
            deadline = (queue.tasks[0].enqueued +
                        queue.options.batch_timeout_micros / 1e6)
            if queue.rows >= queue.options.max_batch_size or deadline <= now:
                if (best is None or
                        queue.tasks[0].enqueued < best.tasks[0].enqueued):
                    best = queue
            else:
                wait = min(wait, deadline - now)
        if best is None:
            return None, [], wait
        batch: List[_Task] = []
        rows = 0
        limit = best.options.max_batch_size
        while best.tasks and rows + best.tasks[0].rows <= limit:
            task = best.tasks.popleft()
            rows += task.rows
            batch.append(task)
        best.rows -= rows
        return best, batch, 0.0

    def _work(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopped:
                        return
                    queue, batch, wait = self._take_batch()
                    if batch:
                        break
                    self._cv.wait(wait)
                if queue.tasks:
                    self._cv.notify()  # Another batch may be ready already.
            self._process(queue, batch)

    def _process(self, queue: _Queue, batch: List[_Task]) -> None:
        start = time.monotonic()
        model_name = queue.model_name
        try:
            merged, rows, padded = _merge(batch, queue.options)
            if self._metrics:
                for task in batch:
                    self._metrics.observe_batch_queuing(
                        (start - task.enqueued) * 1e6)
                self._metrics.observe_batch_processed(model_name, padded,
                                                      padded - rows)
            outputs = queue.run(merged)
            results = []
            offset = 0
            for task in batch:
                results.append(
                    _slice_outputs(outputs, offset, task.rows, padded))
                offset += task.rows
        except Exception as e:  # pylint: disable=broad-except
            error = errors.from_exception(e)
            for task in batch:
                task.future.set_exception(error)
            return
        for task, result in zip(batch, results):
            task.future.set_result(result)


def _merge(batch: List[_Task],
           options: config.BatchingOptions) -> Tuple[Arrays, int, int]:
    """Concatenates a batch's inputs; pads rows up to an allowed size."""
    rows = sum(t.rows for t in batch)
    padded = _round_up(rows, options.allowed_batch_sizes)
    merged = {}
    for name in batch[0].inputs:
        parts = [t.inputs[name] for t in batch]
        if options.pad_variable_length_inputs:
            parts = _pad_to_common_shape(parts)
        tensor = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if padded > rows:
            tensor = np.concatenate(
                [tensor, np.repeat(tensor[:1], padded - rows, axis=0)])
        merged[name] = tensor
    return merged, rows, padded


def _joined(parts: List[futures.Future]) -> futures.Future:
    """A future for a split request: its parts' outputs concatenated."""
    joined: futures.Future = futures.Future()
    remaining = [len(parts)]
    lock = threading.Lock()

    def on_done(_):
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        errors_seen = [p.exception() for p in parts if p.exception()]
        if errors_seen:
            joined.set_exception(errors_seen[0])
            return
        outputs = [p.result() for p in parts]
        joined.set_result(
            {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]})

    for part in parts:
        part.add_done_callback(on_done)
    return joined


def _batch_rows(inputs: Arrays) -> int:
    rows = None
    for array in inputs.values():
        if array.ndim == 0:
            raise errors.invalid_argument(
                'Batching Run() input tensors must have at least one dimension')
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise errors.invalid_argument(
                'Batching Run() input tensors must have equal 0th-dimension '
                'size')
    return rows or 0


def _round_up(rows: int, allowed: Tuple[int, ...]) -> int:
    for size in allowed:
        if size >= rows:
            return size
    return rows


def _pad_to_common_shape(parts: List[np.ndarray]) -> List[np.ndarray]:
    target = tuple(max(p.shape[d] for p in parts) for d in range(parts[0].ndim))
    out = []
    for part in parts:
        if part.shape[1:] == target[1:]:
            out.append(part)
            continue
        fill = part.flat[0] if part.size else np.zeros((), part.dtype)
        padded = np.full((part.shape[0],) + target[1:], fill, dtype=part.dtype)
        padded[tuple(slice(0, n) for n in part.shape)] = part
        out.append(padded)
    return out


def _slice_outputs(outputs: Arrays, offset: int, rows: int,
                   padded: int) -> Arrays:
    sliced = {}
    for name, tensor in outputs.items():
        if tensor.ndim == 0:
            raise errors.failed_precondition(
                'Batched output tensor has 0 dimensions')
        if tensor.shape[0] != padded:
            raise errors.failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum "
                'of the 0th dimension sizes of the input tensors')
        sliced[name] = tensor[offset:offset + rows]
    return sliced
