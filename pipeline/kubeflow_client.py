"""Submits runs and recurring runs of the compiled pipeline to Kubeflow.

Both entry points go through ``kfp.Client(host=...)`` (kfp 2.5, KFP API
v2beta1). The package is what ``KubeflowV2DagRunner`` writes: a *PipelineJob*
JSON (``displayName``, ``labels``, ``pipelineSpec``, ``runtimeConfig``). kfp
2.5's client only reads ``.yaml``/``.yml``/``.zip``/``.tar.gz`` files and
parses their first document as a bare *PipelineSpec*, so a PipelineJob JSON is
rejected twice over. ``load_pipeline_package`` extracts the ``pipelineSpec``
and ``write_pipeline_spec`` writes it as the YAML file the client wants; the
job's ``runtimeConfig`` supplies defaults: ``gcsOutputDirectory`` becomes the
run's pipeline root and its parameter values the run's parameters (those
passed explicitly win). A package that already is a PipelineSpec (JSON or
YAML) goes through the same path unchanged.

Cron: our schedules are 5-field cron (``pipeline.cron``); KFP's scheduler
(robfig/cron) takes 6 fields, seconds first. ``to_kfp_cron`` parses the
expression, expands macros and names, maps weekday 7 to 0, and prefixes
``"0 "`` (second zero), e.g. ``'*/30 2 * * mon'`` -> ``'0 0,30 2 * * 1'``.
KFP evaluates it in the cluster's time zone (usually UTC).

REST calls made (all under ``<host>/apis/v2beta1``): ``GET /healthz`` (client
start-up, when no namespace is set), ``GET /experiments?filter=...`` then
``POST /experiments`` if the experiment does not exist, then ``POST /runs`` or
``POST /recurringruns`` with the pipeline spec inline.
"""

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, Optional, Union

import yaml

from pipeline.cron import CronSchedule


@dataclasses.dataclass
class PipelinePackage:
    """A compiled pipeline, reduced to what a KFP run needs.

    Attributes:
        pipeline_spec: The PipelineSpec as a JSON-style dict.
        platform_spec: Kubernetes platform config, if the package had one.
        display_name: The job's display name, or the pipeline's name.
        parameters: Default runtime parameter values (plain Python values).
        pipeline_root: Default pipeline root (``gcsOutputDirectory``), if any.
    """

    pipeline_spec: Dict[str, Any]
    platform_spec: Optional[Dict[str, Any]] = None
    display_name: Optional[str] = None
    parameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
    pipeline_root: Optional[str] = None

    def parameter_names(self) -> set:
        """Names of the pipeline's runtime parameters."""
        root = self.pipeline_spec.get('root', {})
        return set(root.get('inputDefinitions', {}).get('parameters', {}))


def _plain_value(value: Dict[str, Any]) -> Any:
    """A pipeline-spec-2.0 ``Value`` (``{'intValue': '3'}``) as Python."""
    if 'intValue' in value:
        return int(value['intValue'])
    if 'doubleValue' in value:
        return float(value['doubleValue'])
    if 'stringValue' in value:
        return value['stringValue']
    raise ValueError(f'unsupported runtime parameter value {value!r}')


def load_pipeline_package(
        package_path: Union[str, os.PathLike]) -> PipelinePackage:
    """Reads a PipelineJob JSON (or a PipelineSpec JSON/YAML) package.

    Args:
        package_path: File written by ``KubeflowV2DagRunner`` or the KFP
            compiler.

    Returns:
        The pipeline spec with the job's defaults.

    Raises:
        ValueError: If the file holds neither a PipelineJob nor a PipelineSpec.
    """
    path = os.fspath(package_path)
    with open(path) as package_file:
        if path.endswith('.json'):
            documents = [json.load(package_file)]
        else:
            documents = [d for d in yaml.safe_load_all(package_file) if d]
    if not documents or not isinstance(documents[0], dict):
        raise ValueError(f'{path}: empty or not a pipeline package')
    document = documents[0]
    if 'pipelineSpec' in document:
        runtime = document.get('runtimeConfig', {})
        parameters = dict(runtime.get('parameterValues', {}))
        for name, value in runtime.get('parameters', {}).items():
            parameters.setdefault(name, _plain_value(value))
        spec = document['pipelineSpec']
        return PipelinePackage(pipeline_spec=spec,
                               display_name=document.get('displayName') or
                               spec.get('pipelineInfo', {}).get('name'),
                               parameters=parameters,
                               pipeline_root=runtime.get('gcsOutputDirectory'))
    if 'pipelineInfo' in document and 'root' in document:
        platform = {}
        for extra in documents[1:]:
            platform.update(extra)
        return PipelinePackage(
            pipeline_spec=document,
            platform_spec=platform or None,
            display_name=document['pipelineInfo'].get('name'),
            pipeline_root=document.get('defaultPipelineRoot'))
    raise ValueError(f'{path}: neither a PipelineJob (no "pipelineSpec") nor a '
                     'PipelineSpec (no "pipelineInfo" and "root")')


def write_pipeline_spec(package: PipelinePackage,
                        path: Union[str, os.PathLike]) -> str:
    """Writes the spec as the YAML package kfp reads; returns the path."""
    documents = [package.pipeline_spec]
    if package.platform_spec:
        documents.append(package.platform_spec)
    with open(path, 'w') as spec_file:
        yaml.safe_dump_all(documents, spec_file, sort_keys=False)
    return os.fspath(path)


def to_kfp_cron(expression: str) -> str:
    """Converts a 5-field cron expression or macro to KFP's 6-field form.

    Args:
        expression: For example ``'0 3 * * *'`` or ``'@daily'``.

    Returns:
        ``'0 '`` (seconds) followed by the five fields in numeric form.

    Raises:
        ValueError: If the expression is invalid.
    """
    return '0 ' + CronSchedule.parse(expression).to_fields()


def _parameters(package: PipelinePackage,
                params: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    merged = dict(package.parameters)
    merged.update(params or {})
    known = package.parameter_names()
    unknown = sorted(set(params or {}) - known)
    if unknown:
        raise ValueError(f'unknown pipeline parameter(s) {", ".join(unknown)}; '
                         'the pipeline takes: '
                         f'{", ".join(sorted(known)) or "none"}')
    return merged


def _client(host: str, namespace: Optional[str]):
    import kfp  # Deferred: kfp is only needed when talking to a cluster.
    if namespace:
        return kfp.Client(host=host, namespace=namespace)
    return kfp.Client(host=host)


def submit_run(host: str,
               package_path: Union[str, os.PathLike],
               experiment: str,
               run_name: str,
               params: Optional[Dict[str, Any]] = None,
               namespace: Optional[str] = None,
               *,
               pipeline_root: Optional[str] = None,
               enable_caching: Optional[bool] = None,
               service_account: Optional[str] = None) -> str:
    """Starts one run of a compiled pipeline on Kubeflow Pipelines.

    Args:
        host: KFP API endpoint, e.g. ``http://localhost:8080`` after
            ``kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80``.
        package_path: The ``KubeflowV2DagRunner`` output (PipelineJob JSON).
        experiment: Experiment name; created if missing.
        run_name: Display name of the run.
        params: Runtime parameters; override the package's defaults.
        namespace: Kubernetes namespace (multi-user deployments only).
        pipeline_root: Overrides the package's pipeline root.
        enable_caching: Overrides every task's compile-time caching option.
        service_account: Kubernetes service account for the run's pods.

    Returns:
        The run ID.
    """
    package = load_pipeline_package(package_path)
    parameters = _parameters(package, params)
    client = _client(host, namespace)
    with tempfile.TemporaryDirectory() as scratch:
        spec_path = write_pipeline_spec(package,
                                        os.path.join(scratch, 'pipeline.yaml'))
        result = client.create_run_from_pipeline_package(
            spec_path,
            arguments=parameters,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            pipeline_root=pipeline_root or package.pipeline_root,
            enable_caching=enable_caching,
            service_account=service_account)
    return result.run_id


def create_recurring_run(host: str,
                         package_path: Union[str, os.PathLike],
                         experiment: str,
                         job_name: str,
                         cron: str,
                         max_concurrency: int = 1,
                         params: Optional[Dict[str, Any]] = None,
                         namespace: Optional[str] = None,
                         *,
                         no_catchup: bool = True,
                         enabled: bool = True,
                         start_time: Optional[str] = None,
                         end_time: Optional[str] = None,
                         description: Optional[str] = None,
                         pipeline_root: Optional[str] = None,
                         enable_caching: Optional[bool] = None,
                         service_account: Optional[str] = None) -> str:
    """Creates a KFP recurring run that starts the pipeline on a cron schedule.

    Args:
        host: KFP API endpoint.
        package_path: The ``KubeflowV2DagRunner`` output (PipelineJob JSON).
        experiment: Experiment name; created if missing.
        job_name: Display name of the recurring run.
        cron: 5-field cron expression or macro; sent to KFP as 6 fields by
            prefixing ``"0 "`` for seconds (see ``to_kfp_cron``).
        max_concurrency: Most runs of this job KFP lets run at once.
        params: Runtime parameters; override the package's defaults.
        namespace: Kubernetes namespace (multi-user deployments only).
        no_catchup: If True, after a pause KFP starts only the latest missed
            run instead of backfilling every missed time.
        enabled: Create the recurring run enabled.
        start_time: RFC 3339 time before which nothing starts.
        end_time: RFC 3339 time after which nothing starts.
        description: Description shown in the KFP UI.
        pipeline_root: Overrides the package's pipeline root.
        enable_caching: Overrides every task's compile-time caching option.
        service_account: Kubernetes service account for the runs' pods.

    Returns:
        The recurring run ID.
    """
    if max_concurrency < 1:
        raise ValueError('max_concurrency must be at least 1, got '
                         f'{max_concurrency}')
    kfp_cron = to_kfp_cron(cron)
    package = load_pipeline_package(package_path)
    parameters = _parameters(package, params)
    client = _client(host, namespace)
    experiment_id = client.create_experiment(name=experiment,
                                             namespace=namespace).experiment_id
    with tempfile.TemporaryDirectory() as scratch:
        spec_path = write_pipeline_spec(package,
                                        os.path.join(scratch, 'pipeline.yaml'))
        recurring_run = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            description=description,
            start_time=start_time,
            end_time=end_time,
            cron_expression=kfp_cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=parameters,
            pipeline_package_path=spec_path,
            enabled=enabled,
            pipeline_root=pipeline_root or package.pipeline_root,
            enable_caching=enable_caching,
            service_account=service_account)
    return recurring_run.recurring_run_id
