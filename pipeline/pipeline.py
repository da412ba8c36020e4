"""`create_pipeline()`: the one place the TFX components are wired together.

ExampleGen → StatisticsGen → SchemaGen → ExampleValidator → DataGate
→ Transform → Trainer → Evaluator (vs. the last blessed model)
→ ServingCheck → Pusher. The same pipeline serves every model family and
both runners (local and Kubeflow). A family that learns without labels
(pretraining: `ModelFamily.unlabelled`) ends Transform → Trainer → Pusher:
its model is a trunk for `transfer_from`, with nothing to evaluate or
serve.
"""

import posixpath
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma

# TFX's modules, not `tfx.v1`: that imports Google Cloud AI Platform's
# client too, a third of a run's start-up.
from tfx.components import Evaluator
from tfx.components import ExampleValidator
from tfx.components import FileBasedExampleGen
from tfx.components import Pusher
from tfx.components import SchemaGen
from tfx.components import StatisticsGen
from tfx.components import Trainer
from tfx.components import Tuner
from tfx.components.schema_gen.import_schema_gen import component
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies import latest_artifact_strategy
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2
from tfx.proto import trainer_pb2
from tfx.proto import transform_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from common import names
from common import settings
from common import signatures
from components.data_gate import DataGate
from components.example_gen import executor as example_gen_executor
from components.pusher import executor as pusher_executor
from components.serving_check.component import ServingCheck
from components.transform.component import Transform
from pipeline import configs
from pipeline.run_report.component import RunReport

# Resolves nothing on a pipeline's first run, by design.
PREVIOUS_STATISTICS_RESOLVER = 'previous_statistics_resolver'
DATA_GATE = 'DataGate'

SERVING_CHECK_SPLIT = names.TEST


def trainer_config(config: configs.RunConfig) -> Dict[str, Any]:
    """The Tuner's and the Trainer's custom_config.

    The run's hyper-parameters and, with a Tuner, what its search reads
    (models/tuning.py): the settings the user gave, which it holds at their
    values, and the families it may choose instead of the run's with their own
    settings (a trial, and the Trainer, of another family trains them).
    """
    params = config.hyperparameters
    if int(params['tune_trials']) <= 0:
        return params
    params[names.HELD_SETTINGS] = sorted(dict(config.overrides))
    families = config.tuned_families_hyperparameters()
    if families:
        params[names.FAMILY_PARAMS] = families
    return params


def transform_config(params: Dict[str, Any]) -> Dict[str, Any]:
    """Transform's custom_config: the settings its preprocessing_fn reads.

    The channels come at run time, from ExampleGen's data facts
    (components/transform/executor.py).
    """
    config = {'image_shape': params.get('image_shape')}
    if 'sequence_normalization' in params:
        config['sequence_normalization'] = params['sequence_normalization']
    return config


def example_gen_settings(config: configs.RunConfig, data_uri: str) -> dict:
    """What the ExampleGen executor needs to read `data_uri`.

    The data's kind and name (its layout and classes are learned where it is
    read, at run time), the carved splits' sizes and the reading limits.
    """
    params = config.hyperparameters
    return {
        example_gen_executor.KIND:
            config.family.kind,
        example_gen_executor.DATA_NAME:
            posixpath.basename(data_uri.rstrip('/')),
        'eval_percent':
            configs.EVAL_PERCENT,
        'test_percent':
            configs.TEST_PERCENT,
        'max_examples_per_split':
            params.get('max_examples_per_split', 0),
        'max_length':
            settings.value(params, 'max_length'),
        'on_bad_record':
            settings.value(params, 'on_bad_record'),
        'span_window':
            settings.value(params, 'span_window'),
        **({
            example_gen_executor.GROUPS_FILE:
                settings.value(params, 'groups_file')
        } if config.family.grouped else {}),
    }


def eval_config(min_accuracy: float,
                max_accuracy_drop: float,
                primary_task: Optional[str] = None) -> tfma.EvalConfig:
    """Accuracy on the test split, overall and per class.

    The thresholds apply to the overall slice: at least `min_accuracy`, and
    no worse than the last blessed model by more than `max_accuracy_drop`.

    With `primary_task` (the multi-task model, models/multitask/), each
    task's head is an output of its own, `<task>_scores` against its label:
    the primary task's accuracy is `accuracy`, thresholded and drawn as
    the confusion matrix; another's is `<task>_accuracy`.
    """
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(
            lower_bound={'value': min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={'value': -max_accuracy_drop - 1e-10}))
    primary_metrics = [
        tfma.MetricConfig(class_name='ExampleCount'),
        tfma.MetricConfig(class_name='SparseCategoricalAccuracy',
                          config=f'"name": "{names.ACCURACY_METRIC}"',
                          per_slice_thresholds=[
                              tfma.PerSliceMetricThreshold(
                                  slicing_specs=[tfma.SlicingSpec()],
                                  threshold=threshold)
                          ]),
        # For the run's report (pipeline/report.py).
        tfma.MetricConfig(class_name='MultiClassConfusionMatrixPlot'),
    ]
    # A generic SavedModel: otherwise TFMA deserializes the Keras model
    # twice per model (once only to learn its type), which cost the RNN's
    # Evaluator most of its time (bench/).
    if primary_task is None:
        model_spec = tfma.ModelSpec(model_type=tfma.constants.TF_GENERIC,
                                    signature_name=signatures.DEFAULT_SIGNATURE,
                                    label_key=names.LABEL_KEY,
                                    prediction_key=signatures.SCORES_OUTPUT)
        metrics_specs = [tfma.MetricsSpec(metrics=primary_metrics)]
    else:
        labels = {
            signatures.CLASS_TASK: names.LABEL_KEY,
            signatures.GROUP_TASK: names.GROUP_LABEL_KEY
        }
        outputs = {
            task: signatures.task_output(task, signatures.SCORES_OUTPUT)
            for task in signatures.TASKS
        }
        # `predict`: every head (serving_default has the primary's only).
        model_spec = tfma.ModelSpec(
            model_type=tfma.constants.TF_GENERIC,
            signature_name=signatures.PREDICT_SIGNATURE,
            label_keys={outputs[task]: labels[task] for task in outputs})
        metrics_specs = [
            tfma.MetricsSpec(
                output_names=[outputs[task]],
                metrics=primary_metrics if task == primary_task else [
                    tfma.MetricConfig(
                        class_name='SparseCategoricalAccuracy',
                        config=f'"name": "{task}_{names.ACCURACY_METRIC}"')
                ]) for task in signatures.TASKS
        ]
    return tfma.EvalConfig(model_specs=[model_spec],
                           slicing_specs=[
                               tfma.SlicingSpec(),
                               tfma.SlicingSpec(feature_keys=[names.LABEL_KEY])
                           ],
                           metrics_specs=metrics_specs)


def create_pipeline(config: configs.RunConfig,
                    data_uri: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    pipeline_root: Optional[str] = None,
                    serving_model_dir: Optional[str] = None,
                    serving_check: bool = True,
                    run_report: bool = False) -> tfx_pipeline.Pipeline:
    """Wires the TFX pipeline for `config.model` reading `source`.

    Args:
        config: The run's configuration.
        data_uri: The raw data (a folder, a file or a `.ts` prefix) as the
            components will see it when they run; nothing reads it here.
        metadata_connection_config: ML Metadata connection (local runs).
        beam_pipeline_args: Beam arguments (default: config's).
        pipeline_root: Artifact root (default: config's, under home).
        serving_model_dir: Where Pusher writes versions (default: config's).
        serving_check: Whether to check the model in a model server before
            pushing it (components/serving_check/).
        run_report: Whether to end with the run's report and metrics as
            artifacts the Kubeflow UI shows (pipeline/run_report/); a local
            run writes its report after the run instead.
    """
    family = config.family
    params = config.hyperparameters
    reader_settings = example_gen_settings(config, data_uri)

    example_gen = FileBasedExampleGen(
        input_base=posixpath.dirname(data_uri.rstrip('/')),
        input_config=example_gen_executor.fingerprint_input_config(
            reader_settings[example_gen_executor.DATA_NAME]),
        custom_config=example_gen_executor.settings_to_custom_config(
            reader_settings),
        custom_executor_spec=executor_spec.BeamExecutorSpec(
            example_gen_executor.Executor))
    statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'])
    # Unshaped (VarLen) raw features: images and sequences of any size parse
    # the same way in Transform and in serving.
    if params.get('schema_path'):
        # A curated schema: a span that breaks it stops at the DataGate.
        schema_gen = component.ImportSchemaGen(
            schema_file=params['schema_path'])
    else:
        schema_gen = SchemaGen(statistics=statistics_gen.outputs['statistics'],
                               infer_feature_shape=False)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs['statistics'],
        schema=schema_gen.outputs['schema'])
    # The drift baseline: the statistics of the last span the DataGate let
    # through (a stopped span's never become one), resolved before this
    # run's exist.
    previous_statistics = Resolver(
        strategy_class=latest_artifact_strategy.LatestArtifactStrategy,
        statistics=Channel(type=standard_artifacts.ExampleStatistics,
                           producer_component_id=DATA_GATE,
                           output_key='checked_statistics'),
    ).with_id(PREVIOUS_STATISTICS_RESOLVER)
    statistics_gen.add_upstream_node(previous_statistics)
    data_gate = DataGate(
        anomalies=example_validator.outputs['anomalies'],
        statistics=statistics_gen.outputs['statistics'],
        schema=schema_gen.outputs['schema'],
        baseline_statistics=previous_statistics.outputs['statistics'],
        drift_threshold=float(params['drift_threshold']),
        stop_on_drift=bool(params['stop_on_drift'])).with_id(DATA_GATE)

    # Given ExampleGen's data facts (channels) at run time.
    transform = Transform(examples=example_gen.outputs['examples'],
                          schema=schema_gen.outputs['schema'],
                          preprocessing_fn=family.preprocessing_fn,
                          custom_config=transform_config(params),
                          splits_config=transform_pb2.SplitsConfig(
                              analyze=[names.TRAIN],
                              transform=[names.TRAIN, names.EVAL]))
    transform.add_upstream_node(data_gate)

    model_resolver = Resolver(
        strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver')

    if family.unlabelled:
        return _pretraining_pipeline(config, [
            example_gen, previous_statistics, statistics_gen, schema_gen,
            example_validator, data_gate, transform
        ], metadata_connection_config, beam_pipeline_args, pipeline_root,
                                     serving_model_dir)

    # The base model is an input only when used: as an input it would change
    # the Trainer's cache key with every newly blessed model.
    warm_start = ({
        'base_model': model_resolver.outputs['model']
    } if params['warm_start'] else {})
    params = trainer_config(config)
    tuners = []
    if int(params['tune_trials']) > 0:
        # Random search (models/tuning.py); the Trainer takes the best.
        tuners.append(
            Tuner(tuner_fn=family.tuner_fn,
                  examples=transform.outputs['transformed_examples'],
                  transform_graph=transform.outputs['transform_graph'],
                  schema=schema_gen.outputs['schema'],
                  train_args=trainer_pb2.TrainArgs(splits=[names.TRAIN]),
                  eval_args=trainer_pb2.EvalArgs(splits=[names.EVAL]),
                  custom_config=params))
    trainer = Trainer(run_fn=family.run_fn,
                      **warm_start,
                      **{
                          'hyperparameters':
                              tuner.outputs['best_hyperparameters']
                          for tuner in tuners
                      },
                      examples=transform.outputs['transformed_examples'],
                      transform_graph=transform.outputs['transform_graph'],
                      schema=schema_gen.outputs['schema'],
                      train_args=trainer_pb2.TrainArgs(splits=[names.TRAIN]),
                      eval_args=trainer_pb2.EvalArgs(splits=[names.EVAL]),
                      custom_config=params)

    evaluator = Evaluator(
        examples=example_gen.outputs['examples'],
        model=trainer.outputs['model'],
        baseline_model=model_resolver.outputs['model'],
        example_splits=[names.TEST],
        eval_config=eval_config(
            float(params['min_accuracy']), float(params['max_accuracy_drop']),
            settings.value(params, 'primary_task') if family.grouped else None))

    components = [
        example_gen, previous_statistics, statistics_gen, schema_gen,
        example_validator, data_gate, transform, model_resolver, *tuners,
        trainer, evaluator
    ]
    if serving_check:
        check = ServingCheck(model=trainer.outputs['model'],
                             examples=example_gen.outputs['examples'],
                             split=SERVING_CHECK_SPLIT,
                             model_name=config.model)
        check.add_upstream_node(evaluator)
        components.append(check)
        # Given the infra blessing and no model, Pusher pushes the checked
        # copy of the model, which carries the warmup requests.
        push_inputs = dict(infra_blessing=check.outputs['blessing'])
    else:
        push_inputs = dict(model=trainer.outputs['model'])
    pusher = Pusher(
        model_blessing=evaluator.outputs['blessing'],
        **push_inputs,
        # Copies to a staging folder, then renames: no partial version; no
        # new version for the model already served (a cached rerun).
        custom_executor_spec=executor_spec.ExecutorClassSpec(
            pusher_executor.Executor),
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=serving_model_dir or config.serving_model_dir)))
    components.append(pusher)
    if run_report:
        components.append(
            RunReport(model_name=config.model,
                      examples=example_gen.outputs['examples'],
                      statistics=statistics_gen.outputs['statistics'],
                      anomalies=example_validator.outputs['anomalies'],
                      drift=data_gate.outputs['drift'],
                      model_run=trainer.outputs['model_run'],
                      evaluation=evaluator.outputs['evaluation'],
                      blessing=evaluator.outputs['blessing'],
                      pushed_model=pusher.outputs['pushed_model'],
                      **({
                          'infra_blessing': check.outputs['blessing']
                      } if serving_check else {})))

    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root or config.pipeline_root,
        components=components,
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.effective_beam_args)


def _pretraining_pipeline(
        config: configs.RunConfig, components: List[Any],
        metadata_connection_config, beam_pipeline_args: Optional[List[str]],
        pipeline_root: Optional[str],
        serving_model_dir: Optional[str]) -> tfx_pipeline.Pipeline:
    """`components` (up to Transform), then a Trainer and a Pusher.

    The Trainer pretrains (models/convnet/pretraining.py) and the Pusher
    copies its trunk, unblessed (no labels to evaluate it by), to a new
    version of the trunk's model base path.
    """
    transform = components[-1]
    trainer = Trainer(
        run_fn=config.family.run_fn,
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        schema=transform.inputs['schema'],
        train_args=trainer_pb2.TrainArgs(splits=[names.TRAIN]),
        # The Trainer wants an eval split; pretraining reads none.
        eval_args=trainer_pb2.EvalArgs(splits=[names.EVAL]),
        custom_config=config.hyperparameters)
    pusher = Pusher(
        model=trainer.outputs['model'],
        custom_executor_spec=executor_spec.ExecutorClassSpec(
            pusher_executor.Executor),
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(
                base_directory=serving_model_dir or config.serving_model_dir)))
    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root or config.pipeline_root,
        components=[*components, trainer, pusher],
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or config.effective_beam_args)
