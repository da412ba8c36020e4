"""The training loop every model shares: data, strategy, fit, export.

A model package supplies a `ModelRecipe` (how to build its Keras model, how
transformed features become model inputs, its extra serving signatures) and a
one-line `run_fn` that calls `run(fn_args, recipe)`. Everything else, the
same for every model, lives here once.

Hyper-parameters arrive in the Trainer's `custom_config` (from
pipeline/configs.py) and may be overridden by a Tuner's `hyperparameters`;
class names and channels come from the data, through the transform graph
(models/data_facts.py).
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, TYPE_CHECKING

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import dataset_options

from models import data_facts
from models import distribute
from models import export
from models import features

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx

keras = tf.keras

ModelInputsFn = Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]
Params = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """What a model package contributes to the shared training loop.

    Attributes:
        build_model: (hyper-parameters, number of classes) -> an uncompiled
            Keras model with a softmax output.
        to_model_inputs: (transformed features, hyper-parameters) -> the
            model's inputs.
        extra_signatures: Serving signatures besides `serving_default`.
    """

    build_model: Callable[[Params, int], keras.Model]
    to_model_inputs: Callable[[Dict[str, tf.Tensor], Params],
                              Dict[str, tf.Tensor]]
    extra_signatures: Dict[str, export.SignatureFactory]


def hyperparameters(fn_args: 'tfx.components.FnArgs') -> Dict[str, Any]:
    """The run's hyper-parameters: custom_config and what ExampleGen learned
    from the data (`class_names`, `num_channels`: models/data_facts.py),
    overridden by a Tuner's."""
    params = {**(fn_args.custom_config or {}),
              **data_facts.from_fn_args(fn_args)}
    tuned = fn_args.hyperparameters
    if tuned:
        params.update(tuned.get('values', tuned) if isinstance(tuned, dict)
                      else tuned)
    return params


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
                 cache: bool = False) -> tf.data.Dataset:
    """One epoch of (model inputs, label) batches of transformed examples.

    Args:
        file_pattern: The split's transformed example files.
        data_accessor: The Trainer's TFXIO data accessor.
        schema: The transformed examples' schema.
        to_model_inputs: Transformed features -> the model's inputs.
        batch_size: Examples per batch (the global batch).
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        cache: Read, decompress and parse the files once and keep the parsed
            examples in memory, so that later epochs only shuffle and batch
            them. Needs memory for the whole split.
    """
    if not cache:
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(
                batch_size=batch_size, label_key=features.LABEL_KEY,
                num_epochs=1, shuffle=shuffle, shuffle_seed=seed),
            schema)
    else:
        dataset = data_accessor.tf_dataset_factory(
            file_pattern,
            dataset_options.TensorFlowDatasetOptions(
                batch_size=_CACHE_PARSE_BATCH, label_key=features.LABEL_KEY,
                num_epochs=1, shuffle=False),
            schema).unbatch().cache()
        if shuffle:
            dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed,
                                      reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    # tf.data's autotuning thread sleeps up to 60 s between rounds, and in
    # TF 2.16 dropping an iterator waits for it to wake: Keras drops one every
    # epoch, so epochs stalled idle for up to a minute. Without it, AUTOTUNE
    # still means one map call per core and a prefetch buffer that grows when
    # the model waits for data.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.map(
        lambda inputs, label: (to_model_inputs(inputs), label),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE).with_options(options)


def compile_model(model: keras.Model, params: Dict[str, Any]) -> None:
    """Adam on sparse categorical cross-entropy, clipped when configured."""
    clip_norm = params.get('clip_norm')
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=params.get('learning_rate', 1e-3),
            global_clipnorm=clip_norm or None),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name='accuracy')])


def run(fn_args: 'tfx.components.FnArgs', recipe: ModelRecipe) -> None:
    """Trains the recipe's model under the configured strategy and exports it."""
    params = hyperparameters(fn_args)
    if params.get('seed') is not None:
        # Same data and seed, same weights: initial weights, dropout and the
        # shuffle order all draw from it.
        keras.utils.set_random_seed(int(params['seed']))
    class_names = params['class_names']
    strategy = distribute.make_strategy(params.get('strategy', 'auto'))
    replicas = strategy.num_replicas_in_sync
    global_batch = int(params['batch_size']) * replicas
    logging.info('Training with %s over %d replicas, global batch %d',
                 type(strategy).__name__, replicas, global_batch)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    schema = tf_transform_output.transformed_metadata.schema
    to_model_inputs = functools.partial(recipe.to_model_inputs, params=params)
    cache = bool(params['cache_examples'])
    train = make_dataset(fn_args.train_files, fn_args.data_accessor,
                         schema, to_model_inputs,
                         global_batch, shuffle=True, seed=params.get('seed'),
                         cache=cache)
    evaluation = make_dataset(fn_args.eval_files, fn_args.data_accessor,
                              schema, to_model_inputs,
                              global_batch, shuffle=False, cache=cache)

    with strategy.scope():
        model = recipe.build_model(params, len(class_names))
        compile_model(model, params)
        if fn_args.base_model and params.get('warm_start'):
            warm_start(model, fn_args.base_model)

    model.fit(train, validation_data=evaluation,
              epochs=int(params['epochs']),
              callbacks=[keras.callbacks.TensorBoard(
                  log_dir=fn_args.model_run_dir, update_freq='epoch')],
              verbose=2)
    export.export_serving_model(
        model, tf_transform_output, class_names, to_model_inputs,
        {name: functools.partial(make, params=params)
         for name, make in recipe.extra_signatures.items()},
        fn_args.serving_model_dir)


def warm_start(model: keras.Model, base_model_dir: str) -> bool:
    """Loads the weights of a previously exported model when they match.

    Weights are matched by name (layers are named in build_model) and shape.

    Returns:
        True if every weight was loaded; False (logged) when the base model's
        architecture differs, in which case training starts afresh.
    """
    loaded = tf.saved_model.load(base_model_dir)
    # Every variable the SavedModel holds, whether or not Keras traces were
    # saved with it (export.py saves none, so `loaded.variables` is absent).
    base = {v.name: v for v in tf.train.TrackableView(loaded).descendants()
            if isinstance(v, tf.Variable)}
    if any(w.name not in base or base[w.name].shape != w.shape
           for w in model.weights):
        logging.warning('Base model %s does not match this architecture; '
                        'training from scratch', base_model_dir)
        return False
    for weight in model.weights:
        weight.assign(base[weight.name])
    logging.info('Warm-started from %s', base_model_dir)
    return True
