"""Input pipelines of transformed examples for training and evaluation.

`make_dataset` reads one split (or one replica's or worker's shard of it)
through the Trainer's TFXIO data accessor; `distributed_dataset` gives each
replica or worker its own; `per_worker_dataset` each worker of a parameter-
server cluster; `count_examples` sizes an epoch.
"""

import contextlib
from typing import (
    TYPE_CHECKING,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
)

import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import dataset_options

from common import names

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

ModelInputsFn = Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]
TargetsFn = Callable[[Dict[str, tf.Tensor], tf.Tensor], tf.Tensor]
# Examples parsed per step when filling the in-memory cache, and the shuffle
# buffer drawn from it (TFXIO's own default buffer).
_CACHE_PARSE_BATCH = 1024
_SHUFFLE_BUFFER = 10_000


def make_dataset(file_pattern: List[str],
                 data_accessor: 'tfx.components.DataAccessor',
                 schema: schema_pb2.Schema,
                 to_model_inputs: ModelInputsFn,
                 batch_size: int,
                 shuffle: bool,
                 seed: Optional[int] = None,
                 cache: bool = False,
                 num_shards: int = 1,
                 shard_index: int = 0,
                 repeat: bool = False,
                 to_targets: Optional[TargetsFn] = None) -> tf.data.Dataset:
    """One epoch of (model inputs, label) batches of transformed examples.

    Args:
        file_pattern: The split's transformed example files.
        data_accessor: The Trainer's TFXIO data accessor.
        schema: The transformed examples' schema.
        to_model_inputs: Transformed features -> the model's inputs.
        batch_size: Examples per batch (the global batch, or one
            replica's share of it).
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        cache: Read, decompress and parse the files once and keep the parsed
            examples in memory, so that later epochs only shuffle and batch
            them. Needs memory for the whole split.
        num_shards: Input pipelines reading the split (replicas or workers);
            this one keeps every `num_shards`-th example from `shard_index`.
        shard_index: This pipeline's index.
        repeat: Repeat the epoch forever (reshuffled each time), for a
            distributed dataset fitted for a given number of steps.
        to_targets: (transformed features, label) -> the targets in place
            of the label (the multi-task model's labels of every task).
    """
    if not (cache or num_shards > 1):
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(batch_size=batch_size,
                                                     label_key=names.LABEL_KEY,
                                                     num_epochs=1,
                                                     shuffle=shuffle,
                                                     shuffle_seed=seed), schema)
    else:
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(
                batch_size=_CACHE_PARSE_BATCH,
                label_key=names.LABEL_KEY,
                num_epochs=1,
                shuffle=False), schema).unbatch()
        if num_shards > 1:
            # Sharded by example (DATA), not by file (AUTO, FILE): Transform
            # writes a split as one file, which cannot be divided.
            dataset = dataset.shard(num_shards, shard_index)
        if cache:
            dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(_SHUFFLE_BUFFER,
                                      seed=seed,
                                      reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    if repeat:
        dataset = dataset.repeat()
    # tf.data's autotuning thread sleeps up to 60 s between rounds, and in
    # TF 2.16 dropping an iterator waits for it to wake: Keras drops one every
    # epoch, so epochs stalled idle for up to a minute. Without it, AUTOTUNE
    # still means one map call per core and a prefetch buffer that grows when
    # the model waits for data.
    options = tf.data.Options()
    options.autotune.enabled = False

    def inputs_and_targets(features, label):
        return (to_model_inputs(features),
                to_targets(features, label) if to_targets else label)

    return dataset.map(inputs_and_targets,
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(
                           tf.data.AUTOTUNE).with_options(options)


def count_examples(file_pattern: List[str]) -> int:
    """The records in a split's (gzipped) TFRecord files."""
    return split_size(file_pattern)[0]


def split_size(file_pattern: List[str]) -> Tuple[int, int]:
    """A split's records and their uncompressed bytes, in one pass.

    The records in a split's (gzipped) TFRecord files, and their bytes
    uncompressed, in one pass.
    """
    files = sorted(
        f for pattern in file_pattern for f in tf.io.gfile.glob(pattern))
    compression = 'GZIP' if files and all(
        f.endswith('.gz') for f in files) else ''

    def add(totals, record):
        size = tf.cast(tf.strings.length(record), tf.int64)
        return totals[0] + 1, totals[1] + size

    count, size = tf.data.TFRecordDataset(files, compression).reduce(
        (np.int64(0), np.int64(0)), add)
    return int(count), int(size)


def distributed_dataset(strategy: tf.distribute.Strategy, global_batch: int,
                        inputs: List[Dict[str, int]],
                        make: Callable[..., tf.data.Dataset]):
    """A dataset factory per replica or worker, each with its shard.

    `make(batch_size=, num_shards=, shard_index=)` for every replica (one
    strategy over local devices) or every worker (many workers), each with its
    shard of the examples and its share of the global batch.

    `inputs` gets, for each input pipeline made here, its per-replica
    `batch`, its `shard` and the number of `shards`.
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(global_batch)
        inputs.append({
            'batch': batch,
            'shard': context.input_pipeline_id,
            'shards': context.num_input_pipelines
        })
        return make(batch_size=batch,
                    num_shards=context.num_input_pipelines,
                    shard_index=context.input_pipeline_id)

    if isinstance(strategy, tf.distribute.MirroredStrategy):
        # One pipeline per replica, each iterated by itself on the host:
        # no MultiDeviceIterator, whose own tf.data pipeline keeps the
        # autotuning thread that stalls dropping an iterator.
        options = tf.distribute.InputOptions(experimental_replication_mode=(
            tf.distribute.InputReplicationMode.PER_REPLICA),
                                             experimental_fetch_to_device=False)
    else:
        options = tf.distribute.InputOptions()
    return strategy.distribute_datasets_from_function(dataset_fn, options)


@contextlib.contextmanager
def _unseeded_graph() -> Iterator[None]:
    """Ops made inside draw their seeds when they run, not from one seed.

    A graph's ops without a seed of their own get one derived from the global
    seed (keras.utils.set_random_seed) when they are traced; inside, they get
    none, and each kernel draws its own when it is made.
    """
    graph = tf.compat.v1.get_default_graph()
    seed = graph.seed
    graph.seed = None
    try:
        yield
    finally:
        graph.seed = seed


def per_worker_dataset(global_batch: int, inputs: List[Dict[str, int]],
                       make: Callable[..., tf.data.Dataset]):
    """The input of Keras's fit under ParameterServerStrategy: a DatasetCreator.

    `make(batch_size=, shuffle=)` is traced once on the coordinator and the
    dataset made on every worker from it: each worker reads the whole split,
    repeated, in an order of its own (a worker cannot be told apart inside
    the function, so no shard: with a fixed shuffle seed every worker would
    step through the same batches). A worker that dies leaves no examples
    unread. The shuffle order then does not follow `seed` (nor does
    asynchronous training's order of updates).

    `inputs` gets the pipeline's per-replica `batch`, `shard` and `shards`
    (0 of 1: every worker reads all).
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(global_batch)
        if not inputs:  # Keras may call it more than once.
            inputs.append({'batch': batch, 'shard': 0, 'shards': 1})
        with _unseeded_graph():
            return make(batch_size=batch, seed=None)

    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)
