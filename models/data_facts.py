"""What the pipeline learns from the data at run time.

Class names, channels, format and span. ExampleGen reads them from the data it
converts and writes them as a small JSON file beside its output (`write`);
Transform copies the file into the transform graph it writes, which the Trainer
(and a Tuner) read through `from_fn_args`. Nothing is read from the data when
the pipeline is compiled, so a compiled Kubeflow job holds no fact of the
compiling machine's files.
"""

import json
import os
from typing import Any, Dict

import tensorflow as tf

from common import names

CLASS_NAMES = 'class_names'
NUM_CHANNELS = 'num_channels'
FORMAT = 'format'
SPAN = 'span'
# Clip data only (formats/clip_formats.py): [frames, height, width,
# channels] of every clip.
CLIP_SHAPE = 'clip_shape'
# Multi-task data only (formats/class_groups.py): the sorted group names and
# each class label's group label.
GROUP_NAMES = 'group_names'
CLASS_GROUPS = 'class_groups'


def write(directory: str, facts: Dict[str, Any]) -> str:
    """Writes `facts` as `<directory>/data_facts.json`; returns its path."""
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, names.DATA_FACTS_FILE)
    with tf.io.gfile.GFile(path, 'w') as facts_file:
        facts_file.write(json.dumps(facts, sort_keys=True))
    return path


def read(directory: str) -> Dict[str, Any]:
    """The facts written under `directory`.

    `directory`: an Examples artifact or a transform graph.

    Raises:
        FileNotFoundError: naming the file, if `directory` holds none.
    """
    path = os.path.join(directory, names.DATA_FACTS_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f'{path}: no data facts; this artifact was not written by this '
            "project's ExampleGen and Transform")
    with tf.io.gfile.GFile(path) as facts_file:
        return json.loads(facts_file.read())


def from_fn_args(fn_args) -> Dict[str, Any]:
    """The data's facts for a Trainer's run_fn or a Tuner's tuner_fn.

    Both get the transform graph (`fn_args.transform_output`, also named
    `transform_graph_path`), where Transform copied ExampleGen's facts:
    class names in label order, channels per time step (sequences), the
    raw format and the span read.
    """
    directory = (getattr(fn_args, 'transform_output', None) or
                 getattr(fn_args, 'transform_graph_path', None))
    if not directory:
        raise ValueError('the data facts come with the transform graph; '
                         'this component was given none')
    return read(directory)
