"""The Trainer's side of training, around the training loop.

The Tuner's best family and values, then this process or worker processes,
then the report (`names.TRAINING_REPORT`).

`run` is what every family's TFX run_fn calls (models/entry_points.py); the
loop it runs is models/training.py `train`, which a Tuner's trial
(models/tuning.py) and a worker process (models/workers.py) call directly.
"""

import json
import os
from typing import TYPE_CHECKING, Optional

import tensorflow as tf

from common import names
from common import settings
from models import recipe as recipe_lib
from models import schedule
from models import training
from models import workers

if TYPE_CHECKING:  # TFX itself is not imported to build or train a model.
    from tfx import v1 as tfx


def run(fn_args: 'tfx.components.FnArgs',
        recipe: recipe_lib.ModelRecipe,
        params: Optional[schedule.Params] = None,
        export_model: bool = True) -> float:
    """Trains the recipe's model under the configured strategy and exports it.

    `multi_worker` and `parameter_server` outside a cluster (no TF_CONFIG)
    start the configured cluster of processes here (models/workers.py),
    whose chief (every worker, for `multi_worker`) trains (`train`) inside
    the cluster. The chief writes what the training did
    (`names.TRAINING_REPORT` in the model run directory).

    Args:
        fn_args: The Trainer's (or the Tuner's) arguments.
        recipe: The model family's recipe.
        params: Hyper-parameters (default: the run's,
            training.hyperparameters, with a Tuner's best values; after a
            search over families, the best trial's family trains, with its
            own params).
        export_model: Export to `fn_args.serving_model_dir`; a Tuner's trial
            only trains.

    Returns:
        The best epoch's accuracy on the eval split (its weights are kept).
    """
    if params is None:
        params = training.hyperparameters(fn_args)
        if fn_args.hyperparameters and recipe.search_space:
            # KerasTuner is imported only when a Tuner ran.
            from models import tuning_space  # pylint: disable=import-outside-toplevel
            # Chosen before the workers start: they train the family they
            # are named (models/workers.py).
            recipe, params = tuning_space.best_recipe(fn_args.hyperparameters,
                                                      recipe, params)
    if (params.get('strategy') in settings.CLUSTER_STRATEGIES and
            export_model and not workers.in_cluster()):
        report = workers.launch(fn_args, recipe, params)
    else:
        report = training.train(fn_args, recipe, params, export_model)
    if report.chief and export_model:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(
                os.path.join(fn_args.model_run_dir, names.TRAINING_REPORT),
                'w') as f:
            json.dump(report.as_json(), f)
    return report.best_val_accuracy
