"""The ServingCheck's requests, built from the raw examples.

As TFX's InfraValidator has `request_builder`: the serialized tf.Examples for
a Classify, and the inputs of each other signature it knows how to feed.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tfx import types
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from common import names
from common import signatures
from components.serving_check.errors import WrongAnswer
from serving import client as client_lib


def read_serialized_examples(examples: types.Artifact, split: str,
                             limit: int) -> List[bytes]:
    """Reads up to `limit` serialized tf.Examples of one split of an artifact.

    Args:
        examples: An Examples artifact written by ExampleGen (gzipped
            TFRecord files under `Split-<name>/`).
        split: The split name.
        limit: The most records to read.

    Returns:
        The serialized records, in file order.

    Raises:
        ValueError: The artifact has no such split or the split is empty.
    """
    split_uri = artifact_utils.get_split_uri([examples], split)
    files = sorted(fileio.glob(os.path.join(split_uri, '*.gz')))
    if not files:
        raise ValueError(f'no *.gz TFRecord files in split {split!r} '
                         f'({split_uri})')
    dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
    records = [r.numpy() for r in dataset.take(limit)]
    if not records:
        raise ValueError(f'split {split!r} ({split_uri}) has no examples')
    return records


def _feature(example: Any, key: str, kind: str, signature: str) -> Any:
    feature = example.features.feature
    if key not in feature or not getattr(feature[key], kind).value:
        raise WrongAnswer(
            f'the model declares {signature} but the examples have no '
            f'{key!r} feature to feed it')
    return getattr(feature[key], kind).value


def build_signature_inputs(
        signature: str, signature_def: Any, serialized_examples: Sequence[bytes]
) -> Optional[Dict[str, np.ndarray]]:
    """The inputs for an extra signature, made from the raw examples.

    Args:
        signature: The signature name.
        signature_def: Its SignatureDef (for the input dtypes).
        serialized_examples: The serialized tf.Examples.

    Returns:
        {input name: array}, or None for a signature we cannot feed.

    Raises:
        WrongAnswer: The examples lack the features the signature needs.
    """
    input_names = set(signature_def.inputs)
    if input_names == {signatures.EXAMPLES_INPUT}:
        # `predict` of a multi-task model: serving_default's input.
        return {
            signatures.EXAMPLES_INPUT:
                np.array(serialized_examples, dtype=object)
        }
    examples = [example_pb2.Example.FromString(s) for s in serialized_examples]
    if (signature == signatures.IMAGE_SIGNATURE and
            input_names == {signatures.IMAGE_INPUT}):
        images = [
            _feature(e, names.IMAGE_KEY, 'bytes_list', signature)[0]
            for e in examples
        ]
        return {signatures.IMAGE_INPUT: np.array(images, dtype=object)}
    if (signature == signatures.CLIP_SIGNATURE and
            input_names == {signatures.CLIP_INPUT}):
        # [batch, frames, height, width, channels]: the signature's shape.
        clip_shape = [
            int(d.size) for d in signature_def.inputs[
                signatures.CLIP_INPUT].tensor_shape.dim
        ][1:]
        clips = []
        for i, e in enumerate(examples):
            values = np.array(_feature(e, names.CLIP_KEY, 'float_list',
                                       signature),
                              dtype=np.float32)
            if values.size != np.prod(clip_shape):
                raise WrongAnswer(
                    f'example {i}: {values.size} clip values do not reshape '
                    f'to the signature\'s clip shape {clip_shape}')
            clips.append(values.reshape(clip_shape))
        return {signatures.CLIP_INPUT: np.stack(clips)}
    if (signature == signatures.SEQUENCE_SIGNATURE and input_names
            == {signatures.SEQUENCE_INPUT, signatures.LENGTH_INPUT}):
        sequences = []
        for i, e in enumerate(examples):
            values = np.array(_feature(e, names.SEQUENCE_KEY, 'float_list',
                                       signature),
                              dtype=np.float32)
            length = int(
                _feature(e, names.LENGTH_KEY, 'int64_list', signature)[0])
            if length <= 0 or values.size % length:
                raise WrongAnswer(
                    f'example {i}: {values.size} sequence values do not '
                    f'reshape to length {length}')
            sequences.append(values.reshape(length, -1))
        dtypes = {
            name: tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
            for name, info in signature_def.inputs.items()
        }
        padded, lengths = client_lib.pad_sequences(
            sequences, dtype=dtypes[signatures.SEQUENCE_INPUT])
        return {
            signatures.SEQUENCE_INPUT:
                padded,
            signatures.LENGTH_INPUT:
                lengths.astype(dtypes[signatures.LENGTH_INPUT])
        }
    return None
