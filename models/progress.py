"""Training progress a user can watch: steps, loss, accuracy and an ETA.

On a terminal, one bar per epoch redrawn in place; elsewhere (CI, a log
file) plain lines, at most one every `interval` seconds, and one at the end
of each epoch. Every epoch starts with an `Epoch i/N` header, a run of one
epoch too (Keras leaves it out then).
"""

import sys
import time
from typing import Any, Callable, Dict, Optional, TextIO

import tensorflow as tf

keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1, as models/ uses

_BAR_WIDTH = 24
_REDRAW_SECONDS = 0.1  # On a terminal: at most ten redraws a second.


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
    if seconds >= 60:
        return f'{seconds // 60}:{seconds % 60:02d}'
    return f'{seconds}s'


def _metrics(logs: Optional[Dict[str, Any]]) -> str:
    return ''.join(f' - {name}: {float(value):.4f}'
                   for name, value in (logs or {}).items()
                   if name.endswith(('loss', 'accuracy')))


class TrainingProgress(keras.callbacks.Callback):
    """Writes each epoch's progress as Keras's bar or plain lines.

    Writes each epoch's progress to `out` (default: stderr, where the local
    runner writes; stdout keeps the run's JSON line).

    Args:
        out: The stream; a bar when it is a terminal, lines otherwise.
        interval: Seconds between plain lines within an epoch.
        clock: Seconds from any start (tests pass a clock of their own).
    """

    def __init__(self,
                 out: Optional[TextIO] = None,
                 interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._out = out
        self._interval = interval
        self._clock = clock
        self._epochs = 0
        self._steps: Optional[int] = None
        self._started = self._last = 0.0

    @property
    def _stream(self) -> TextIO:
        # Resolved at each write: tests and runners may swap stderr.
        return self._out or sys.stderr

    def _terminal(self) -> bool:
        return bool(getattr(self._stream, 'isatty', lambda: False)())

    def on_train_begin(self, logs=None):
        self._epochs = int(self.params.get('epochs') or 1)
        self._steps = self.params.get('steps')

    def on_epoch_begin(self, epoch, logs=None):
        self._write(f'Epoch {epoch + 1}/{self._epochs}\n')
        self._started = self._last = self._clock()

    def on_train_batch_end(self, batch, logs=None):
        now = self._clock()
        wait = _REDRAW_SECONDS if self._terminal() else self._interval
        if now - self._last < wait:
            return
        self._last = now
        done = batch + 1
        elapsed = now - self._started
        line = self._progress(done)
        if self._steps:
            eta = elapsed / done * (self._steps - done)
            line += f' - ETA {_duration(eta)}'
        line += _metrics(logs)
        if self._terminal():
            self._write(f'\r{line}\x1b[K')
        else:
            self._write(line + '\n')

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self._clock() - self._started
        steps = self._steps or 0
        line = ((self._progress(steps) if steps else '') +
                f' - {_duration(elapsed)}' + _metrics(logs))
        self._write(('\r' if self._terminal() else '') + line.lstrip(' -') +
                    ('\x1b[K' if self._terminal() else '') + '\n')

    def _progress(self, done: int) -> str:
        if not self._steps:
            return f'{done} steps'
        width = len(str(self._steps))
        text = f'{done:>{width}}/{self._steps}'
        if self._terminal():
            filled = _BAR_WIDTH * done // self._steps
            text += ' [' + '=' * filled + '.' * (_BAR_WIDTH - filled) + ']'
        return text

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


class EpochProgress(TrainingProgress):
    """TrainingProgress without the lines within an epoch.

    What ParameterServerStrategy allows: Keras refuses callbacks with batch
    hooks there (the steps run on the workers, asynchronously).
    """

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
