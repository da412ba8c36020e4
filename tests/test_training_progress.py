"""models/progress.py: the progress a local run shows while it trains, from a
tiny in-process Keras fit (no pipeline run)."""

import io
import re

import numpy as np
import tensorflow as tf

from models import progress

keras = tf.keras
_TIME = r'(\d+s|[\d:]+)'  # 7s, 2:08, 1:02:08


class _Terminal(io.StringIO):

    def isatty(self) -> bool:
        return True


def _fit(out, epochs: int, batch_size: int = 8, **kwargs) -> None:
    """Fits a tiny model on 32 examples with `TrainingProgress(out,
    **kwargs)`, a line per step unless `kwargs` say otherwise."""
    kwargs.setdefault('interval', 0.0)
    inputs = np.random.default_rng(0).normal(size=(32, 3)).astype('float32')
    labels = (inputs[:, 0] > 0).astype('int64')
    model = keras.Sequential([keras.layers.Dense(2, activation='softmax')])
    model.compile('sgd', 'sparse_categorical_crossentropy', ['accuracy'])
    model.fit(inputs,
              labels,
              batch_size=batch_size,
              epochs=epochs,
              verbose=0,
              validation_data=(inputs, labels),
              callbacks=[progress.TrainingProgress(out, **kwargs)])


def test_a_plain_line_every_30_seconds_by_default():
    """The default interval, on a clock that moves 10 s at every look: one
    line per three steps of eight, then the epoch's end."""
    ticks = iter(range(10, 10_000, 10))
    out = io.StringIO()
    _fit(
        out,
        epochs=1,
        batch_size=4,
        interval=progress.TrainingProgress(None).  # The default.
        _interval,  # pylint: disable=protected-access
        clock=lambda: float(next(ticks)))
    lines = out.getvalue().splitlines()
    assert [line.split(' ')[0] for line in lines
           ] == ['Epoch', '3/8', '6/8', '8/8'], lines
    # 30 s for 3 steps: 50 s for the 5 left.
    assert lines[1].startswith('3/8 - ETA 50s - loss: '), lines
    assert lines[3].startswith('8/8 - 1:30 - loss: '), lines


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    _fit(out, epochs=1)
    lines = out.getvalue().splitlines()
    assert lines[0] == 'Epoch 1/1'  # Keras leaves a 1-epoch header out.
    # A line per step (interval 0): steps of the epoch, an ETA, the metrics.
    assert re.fullmatch(
        rf'1/4 - ETA {_TIME} - loss: [0-9.]+ - accuracy: '
        r'[0-9.]+', lines[1]), lines
    assert len(lines) == 1 + 4 + 1, lines
    assert re.fullmatch(
        rf'4/4 - {_TIME} - loss: [0-9.]+ - accuracy: [0-9.]+'
        r' - val_loss: [0-9.]+ - val_accuracy: [0-9.]+', lines[-1]), lines
    assert '\r' not in out.getvalue()


def test_a_bar_on_a_terminal():
    out = _Terminal()
    _fit(out, epochs=2)
    text = out.getvalue()
    assert text.startswith('Epoch 1/2\n') and '\nEpoch 2/2\n' in text
    assert re.search(rf'\r\d/4 \[=*\.*\] - ETA {_TIME} - loss: ', text), text
    # Each epoch ends with its final bar on a line of its own.
    ends = re.findall(rf'\r4/4 \[={{24}}\] - {_TIME} - loss: [^\r\n]*\n', text)
    assert len(ends) == 2, text
