"""Multi-task learning: the convnet's trunk shared by a head per task.

Two tasks on one image: its class (the class folders) and the class's
coarser group (a mapping file, formats/class_groups.py). Both heads, a
softmax layer each, read the convnet's trunk (models/convnet/model.py: its
filter banks and dense layer), so the lower layers learn from both labels.
The Keras model outputs the heads side by side, [batch, classes + groups],
and is trained against [batch, 2] targets (class label, group label) on
the sum of each head's cross-entropy times its weight
(`class_loss_weight`, `group_loss_weight`). Its metrics are each head's
accuracy and loss; `accuracy`, which chooses the kept epoch, is the
primary task's (`primary_task`), and the other head's is
`<task>_accuracy`.

Exported, `predict` (serialized tf.Examples) and `serving_image` (image
bytes) answer with every head: `<task>_scores` and `<task>_classes` for
each task, and the primary task's again as `scores` and `classes`;
`serving_default` with the primary's `scores` and `classes` alone, which
the Classify API, TFMA's blessing and the serving check read
(common/signatures.py).
"""

from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from common import names
from common import settings
from common import signatures
from models import export
from models import recipe as recipe_lib
from models import schedule
from models.convnet import model as convnet

keras = tf.keras
Params = Dict[str, Any]


def task_sizes(params: Params) -> Dict[str, int]:
    """Task -> its head's classes, in the model output's order."""
    return {
        signatures.CLASS_TASK: len(params['class_names']),
        signatures.GROUP_TASK: len(params['group_names'])
    }


def _spans(sizes: Dict[str, int]) -> Dict[str, Tuple[int, int]]:
    """Task -> (first column, columns) of its head in the model output."""
    spans, start = {}, 0
    for task, size in sizes.items():
        spans[task] = (start, size)
        start += size
    return spans


def build_model(params: Params, num_classes: int) -> keras.Model:
    """The convnet's trunk with a softmax head per task, side by side."""
    sizes = task_sizes(params)
    if sizes[signatures.CLASS_TASK] != num_classes:
        raise ValueError(f'{num_classes} classes, but class_names holds '
                         f'{sizes[signatures.CLASS_TASK]}')
    image, shared = convnet.trunk(params)
    heads = [
        keras.layers.Dense(size, activation='softmax',
                           name=f'{task}_head')(shared)
        for task, size in sizes.items()
    ]
    outputs = keras.layers.Concatenate(name='heads')(heads)
    return keras.Model({names.IMAGE_KEY: image}, outputs, name='multitask')


def _head_cross_entropy(targets: tf.Tensor, outputs: tf.Tensor, column: int,
                        start: int, size: int) -> tf.Tensor:
    """One head's cross-entropy per example."""
    return keras.losses.sparse_categorical_crossentropy(
        tf.cast(targets[:, column], tf.int64), outputs[:, start:start + size])


def _head_accuracy(targets: tf.Tensor, outputs: tf.Tensor, column: int,
                   start: int, size: int) -> tf.Tensor:
    """One head's hits per example (1.0 or 0.0)."""
    predicted = tf.argmax(outputs[:, start:start + size], axis=-1)
    return tf.cast(tf.equal(predicted, tf.cast(targets[:, column], tf.int64)),
                   tf.float32)


class MultiTaskLoss(keras.losses.Loss):
    """The heads' cross-entropies, weighted and summed."""

    def __init__(self,
                 sizes: Dict[str, int],
                 weights: Dict[str, float],
                 name: str = 'multitask_loss',
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.sizes = dict(sizes)
        self.weights = dict(weights)

    def call(self, y_true, y_pred):
        total = 0.0
        for column, (task, (start,
                            size)) in enumerate(_spans(self.sizes).items()):
            total += self.weights[task] * _head_cross_entropy(
                y_true, y_pred, column, start, size)
        return total

    def get_config(self):
        return {
            **super().get_config(), 'sizes': self.sizes,
            'weights': self.weights
        }


def _head_metrics(sizes: Dict[str, int], primary: str) -> List[Any]:
    """Each head's accuracy and cross-entropy as Keras metrics."""
    metrics = []
    for column, (task, (start, size)) in enumerate(_spans(sizes).items()):
        accuracy_name = (names.ACCURACY_METRIC
                         if task == primary else f'{task}_accuracy')
        metrics += [
            keras.metrics.MeanMetricWrapper(_head_accuracy,
                                            name=accuracy_name,
                                            column=column,
                                            start=start,
                                            size=size),
            keras.metrics.MeanMetricWrapper(_head_cross_entropy,
                                            name=f'{task}_loss',
                                            column=column,
                                            start=start,
                                            size=size)
        ]
    return metrics


def compile_model(
        model: keras.Model,
        params: Params,
        learning_rate: Optional[schedule.LearningRate] = None) -> None:
    """Adam on the weighted heads' cross-entropies; metrics per head."""
    if learning_rate is None:
        learning_rate = settings.value(params, 'learning_rate')
    sizes = task_sizes(params)
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate,
            global_clipnorm=params.get('clip_norm') or None),
        loss=MultiTaskLoss(
            sizes, {
                task: float(settings.value(params, f'{task}_loss_weight'))
                for task in sizes
            }),
        metrics=_head_metrics(sizes, settings.value(params, 'primary_task')))


def to_targets(transformed: Dict[str, tf.Tensor], label: tf.Tensor,
               params: Params) -> tf.Tensor:
    """[batch, 2]: each example's class label and group label."""
    del params  # The same columns for every model: signatures.TASKS.
    return tf.stack([label, transformed[names.GROUP_LABEL_KEY]], axis=1)


def outputs_fn(params: Params) -> export.OutputsFn:
    """The model's output -> every head's scores and classes, and primary's."""
    sizes = task_sizes(params)
    task_names = {
        signatures.CLASS_TASK: tf.constant(list(params['class_names'])),
        signatures.GROUP_TASK: tf.constant(list(params['group_names']))
    }
    primary = settings.value(params, 'primary_task')

    def to_outputs(output: tf.Tensor) -> Dict[str, tf.Tensor]:
        answer = {}
        for task, (start, size) in _spans(sizes).items():
            scores = output[:, start:start + size]
            classes = export.class_rows(task_names[task], scores)
            answer[signatures.task_output(task,
                                          signatures.SCORES_OUTPUT)] = scores
            answer[signatures.task_output(task,
                                          signatures.CLASSES_OUTPUT)] = classes
            if task == primary:
                answer[signatures.SCORES_OUTPUT] = scores
                answer[signatures.CLASSES_OUTPUT] = classes
        return answer

    return to_outputs


def export_model(model: keras.Model, tf_transform_output, class_names,
                 to_model_inputs, extra_signatures, export_dir: str,
                 params: Params, train_data: tf.data.Dataset) -> None:
    """Exports with every head's answer in `predict` and `serving_image`."""
    del train_data  # Nothing is read from the training split.
    export.export_serving_model(model,
                                tf_transform_output,
                                class_names,
                                to_model_inputs,
                                extra_signatures,
                                export_dir,
                                to_outputs=outputs_fn(params))


def search_space(hp) -> Dict[str, Any]:
    """The convnet's space, and the group head's loss weight."""
    return {
        **convnet.search_space(hp), 'group_loss_weight':
            hp.Choice('group_loss_weight', [0.25, 0.5, 1.0])
    }


RECIPE = recipe_lib.ModelRecipe(
    name='multitask',
    build_model=build_model,
    to_model_inputs=convnet.to_model_inputs,
    extra_signatures={signatures.IMAGE_SIGNATURE: convnet.image_signature},
    search_space=search_space,
    compile_model=compile_model,
    export_model=export_model,
    to_targets=to_targets)
