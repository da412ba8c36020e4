"""Past pipeline runs of a home, read back from its ML Metadata.

`python -m pipeline runs` lists them (one line a run); `python -m pipeline
show RUN` prints one with each component's state, wall time and output
artifacts. Nothing is written: the store is opened read-only.
"""

import datetime
import os
from typing import Any, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import summary

_PIPELINE_SUFFIX = '-pipeline'  # configs.RunConfig.pipeline_name
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT,
                  metadata_store_pb2.Event.DECLARED_OUTPUT)
_State = metadata_store_pb2.Execution.State


class NoSuchRun(LookupError):
    """The run named is not in the home's ML Metadata."""


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The ML Metadata store at `metadata_path`, read-only (it must exist)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    return metadata_store.MetadataStore(config)


def _model(store: metadata_store.MetadataStore, run: Any) -> str:
    """The model family whose pipeline made `run` ('' if unknown)."""
    for parent in store.get_parent_contexts_by_context(run.id):
        if parent.name.endswith(_PIPELINE_SUFFIX):
            return parent.name[:-len(_PIPELINE_SUFFIX)]
    return ''


def _seconds(executions: List[Any]) -> float:
    """From the first execution's start to the last one's end."""
    if not executions:
        return 0.0
    start = min(e.create_time_since_epoch for e in executions)
    end = max(e.last_update_time_since_epoch for e in executions)
    return round((end - start) / 1000, 1)


def _version(pushed_model: Optional[str]) -> Optional[str]:
    return os.path.basename(pushed_model) if pushed_model else None


def list_runs(store: metadata_store.MetadataStore,
              model: Optional[str] = None) -> List[Dict[str, Any]]:
    """Every run in `store` (of `model` only, if given), oldest first.

    Returns:
        Per run: run (its id), started (local time), model, span, accuracy,
        blessed, pushed_version (the version serving its model, if pushed),
        new_version, wall_seconds (first component start to last end) and
        state (COMPLETE, or FAILED/RUNNING when a component, not counting
        resolvers, was).
    """
    runs = []
    for context in store.get_contexts_by_type('pipeline_run'):
        if not model or _model(store, context) == model:
            runs.append(_run_row(store, context))
    return sorted(runs, key=lambda r: r['started'])


def _run_row(store: metadata_store.MetadataStore,
             context: Any) -> Dict[str, Any]:
    executions = store.get_executions_by_context(context.id)
    result = summary.run_summary(store, context.name)
    # A resolver that finds nothing (no previous span yet) is recorded as
    # FAILED, and the run goes on: it does not make the run a failure.
    resolvers = {
        t.id
        for t in store.get_execution_types_by_id(
            list({e.type_id for e in executions}))
        if t.name.endswith('.Resolver')
    }
    states = {
        _State.Name(e.last_known_state)
        for e in executions
        if e.type_id not in resolvers
    }
    return {
        'run':
            context.name,
        'started':
            datetime.datetime.fromtimestamp(context.create_time_since_epoch /
                                            1000).strftime('%Y-%m-%d %H:%M:%S'),
        'model':
            _model(store, context),
        'span':
            result['span'],
        'accuracy':
            result['accuracy'],
        'blessed':
            result['blessed'],
        'pushed_version':
            _version(result['pushed_model']),
        'new_version':
            result['new_version'],
        'wall_seconds':
            _seconds(executions),
        'state':
            next((s for s in ('FAILED', 'RUNNING', 'NEW') if s in states),
                 'COMPLETE'),
    }


def find_run(store: metadata_store.MetadataStore, run: str) -> str:
    """The id of the run `run` names: its id, or a prefix of one id only.

    Raises:
        NoSuchRun: no run, or several, start with `run`.
    """
    names = [c.name for c in store.get_contexts_by_type('pipeline_run')]
    if run in names:
        return run
    matches = [name for name in names if name.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NoSuchRun(f'{run!r} names {len(matches)} runs: '
                        f'{", ".join(sorted(matches))}')
    raise NoSuchRun(f'no run {run!r} (python -m pipeline runs lists them)')


def run_details(store: metadata_store.MetadataStore,
                run: str) -> Dict[str, Any]:
    """One run: `list_runs`' fields plus its components.

    The components in the order they ran, each with its state, wall seconds
    and {output key: [uri, ...]}.

    Raises:
        NoSuchRun: `find_run` finds no single run.
    """
    run_id = find_run(store, run)
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    details = _run_row(store, context)
    executions = sorted(store.get_executions_by_context(context.id),
                        key=lambda e: e.create_time_since_epoch)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {
        a.id: a for a in store.get_artifacts_by_id(
            sorted({e.artifact_id for e in events}))
    }
    components = []
    for execution in executions:
        node = next((c.name.split('.', 1)[-1]
                     for c in store.get_contexts_by_execution(execution.id)
                     if c.name.startswith(f'{details["model"]}'
                                          f'{_PIPELINE_SUFFIX}.')), '')
        outputs: Dict[str, List[str]] = {}
        for event in events:
            if (event.execution_id == execution.id and
                    event.type in _OUTPUT_EVENTS and
                    event.artifact_id in artifacts):
                key = next(
                    (s.key for s in event.path.steps if s.HasField('key')), '')
                outputs.setdefault(key,
                                   []).append(artifacts[event.artifact_id].uri)
        components.append({
            'component': node,
            'state': _State.Name(execution.last_known_state),
            'seconds': _seconds([execution]),
            'outputs': outputs,
        })
    return {**details, 'components': components}


def _show(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


_COLUMNS = (('run', 'run'), ('model', 'model'), ('span', 'span'),
            ('accuracy', 'accuracy'), ('blessed', 'blessed'),
            ('pushed_version', 'pushed'), ('wall_seconds',
                                           'seconds'), ('state', 'state'))


def format_runs(runs: List[Dict[str, Any]]) -> str:
    """`list_runs`' result as a table, one line a run."""
    rows = [[title for _, title in _COLUMNS]] + [[
        _show(run[key]) +
        ('' if key != 'pushed_version' or not run['pushed_version'] or
         run['new_version'] else ' (again)') for key, _ in _COLUMNS
    ] for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return '\n'.join('  '.join(
        cell.ljust(width)
        for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def format_run(details: Dict[str, Any]) -> str:
    """`run_details`' result: the run's fields, then each component."""
    lines = [
        f'{title}: {_show(details[key])}'
        for key, title in (('run', 'run'), ('started', 'started'),
                           ('model', 'model'), ('state', 'state'),
                           ('span', 'span'), ('accuracy', 'accuracy'),
                           ('blessed', 'blessed'), ('pushed_version',
                                                    'pushed version'),
                           ('new_version', 'new version'), ('wall_seconds',
                                                            'wall seconds'))
    ]
    lines.append('components:')
    for component in details['components']:
        lines.append(f'  {component["component"]}: {component["state"]}, '
                     f'{component["seconds"]:g} s')
        for key, uris in sorted(component['outputs'].items()):
            lines += [f'    {key}: {uri}' for uri in uris]
    return '\n'.join(lines)
