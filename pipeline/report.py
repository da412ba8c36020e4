"""One HTML page per pipeline run: what a TFX user on Kubeflow sees in its UI.

Built after the run from ML Metadata and the run's artifacts (nothing is
recomputed): the data's statistics and anomalies (TFDV's own HTML), drift
against the previous span, the Trainer's curves, TFMA's metrics overall and
per class by class name, the confusion matrix, the comparison with the last
blessed model and the serving check's verdict. Figures are inline SVG, so
the page is one file that can be mailed or archived.

`write_report` gathers (`gather`) and renders (`render`); `render` takes
plain values and protos, so it is tested on small inputs apart from a run.
"""

import html
import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_data_validation.utils import anomalies_util
from tensorflow_data_validation.utils import display_util
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from common import names
from models import data_facts
from pipeline import summary

REPORTS_DIR = 'reports'
# The page's sections, in order: (id, title). Tests look for these ids.
SECTIONS = (
    ('summary', 'Run'),
    ('statistics', 'Data statistics'),
    ('anomalies', 'Data anomalies'),
    ('drift', 'Drift against the previous span'),
    ('training', 'Training'),
    ('metrics', 'Evaluation metrics'),
    ('confusion', 'Confusion matrix (test split)'),
    ('comparison', 'Comparison with the last blessed model'),
    ('serving', 'Serving check'),
)
# TFX's names for the serving check's verdict files (InfraBlessing).
_INFRA_NOT_BLESSED = 'INFRA_NOT_BLESSED'
_CONFUSION_PLOT = 'multi_class_confusion_matrix_plot'
_STATS_FILE = 'FeatureStats.pb'


def report_path(home: str, pipeline_name: str, run_id: str) -> str:
    """Where the report of run `run_id` goes, under the run's home."""
    name = re.sub(r'[^0-9A-Za-z_.-]', '-', run_id)
    return os.path.join(home, REPORTS_DIR, pipeline_name, f'{name}.html')


def write_report(store: metadata_store.MetadataStore, run_id: str, path: str,
                 run: Dict[str, Any]) -> str:
    """Writes the report of run `run_id` to `path`; returns `path`.

    Args:
        store: The pipeline's ML Metadata.
        run_id: The run (its `pipeline_run` context's name).
        path: The HTML file to write (`report_path`).
        run: The run's summary (pipeline/summary.py), shown at the top.
    """
    page = render(run_id, run, **gather(store, run_id))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(page)
    return path


def _artifacts_by_key(
        store: metadata_store.MetadataStore,
        run_id: str) -> Dict[Tuple[str, str], metadata_store_pb2.Artifact]:
    """(artifact type, input or output key) -> the run's artifact (the last
    one when several executions used the key)."""
    context = store.get_context_by_type_and_name('pipeline_run', run_id)
    if context is None:
        raise LookupError(f'no pipeline run {run_id!r} in ML Metadata')
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {
        a.id: a
        for a in store.get_artifacts_by_id(list({e.artifact_id
                                                 for e in events}))
    }
    types = {
        t.id: t.name for t in store.get_artifact_types_by_id(
            list({a.type_id for a in artifacts.values()}))
    }
    found = {}
    for event in sorted(events, key=lambda e: e.execution_id):
        artifact = artifacts[event.artifact_id]
        key = event.path.steps[0].key if event.path.steps else ''
        found[(types[artifact.type_id], key)] = artifact
    return found


def _splits(uri: str, file_name: str) -> Dict[str, str]:
    """split name -> its file in a split artifact at `uri`."""
    paths = {}
    for entry in sorted(os.listdir(uri)) if os.path.isdir(uri) else []:
        path = os.path.join(uri, entry, file_name)
        if entry.startswith('Split-') and os.path.exists(path):
            paths[entry[len('Split-'):]] = path
    return paths


def gather(store: metadata_store.MetadataStore, run_id: str) -> Dict[str, Any]:
    """What `render` shows of run `run_id`, read from ML Metadata and the
    run's artifacts."""
    found = _artifacts_by_key(store, run_id)
    # ExampleGen's output, beside which it wrote the data's facts.
    examples = found.get(('Examples', 'examples'))
    facts = data_facts.read(examples.uri) if examples else {}
    gathered: Dict[str, Any] = {
        'class_names': facts.get(data_facts.CLASS_NAMES) or [],
        'statistics': {},
        'anomalies': {},
        'drift': None,
        'trainer': None,
        'metrics': None,
        'confusion': None,
        'blessing': None,
        'serving': None
    }
    statistics = found.get(('ExampleStatistics', 'statistics'))
    if statistics:
        gathered['statistics'] = {
            split: tfdv.load_stats_binary(path)
            for split, path in _splits(statistics.uri, _STATS_FILE).items()
        }
    anomalies = found.get(('ExampleAnomalies', 'anomalies'))
    if anomalies:
        gathered['anomalies'] = {
            split: anomalies_util.load_anomalies_binary(path) for split, path in
            _splits(anomalies.uri, names.ANOMALIES_FILE).items()
        }
    drift = found.get(('ExampleAnomalies', 'drift'))
    if drift:
        paths = _splits(drift.uri, names.ANOMALIES_FILE)
        baseline = found.get(('ExampleStatistics', 'baseline_statistics'))
        gathered['drift'] = {
            'compared':
                baseline is not None,
            'anomalies': [
                anomalies_util.load_anomalies_binary(p) for p in paths.values()
            ]
        }
    model_run = found.get(('ModelRun', 'model_run'))
    report_file = (os.path.join(model_run.uri, names.TRAINING_REPORT)
                   if model_run else '')
    if report_file and os.path.exists(report_file):
        with open(report_file, encoding='utf-8') as f:
            gathered['trainer'] = json.load(f)
    evaluation = found.get(('ModelEvaluation', 'evaluation'))
    if evaluation:
        gathered['metrics'] = _metrics(evaluation.uri)
        gathered['confusion'] = _confusion(evaluation.uri)
        gathered['validation'] = _failures(evaluation.uri)
    blessing = found.get(('ModelBlessing', 'blessing'))
    if blessing:
        gathered['blessing'] = {
            name:
                summary._property(blessing,
                                  name)  # pylint: disable=protected-access
            for name in ('blessed', 'current_model', 'baseline_model')
        }
    infra = found.get(('InfraBlessing', 'blessing'))
    if infra:
        reason_file = os.path.join(infra.uri, _INFRA_NOT_BLESSED)
        reason = ''
        if os.path.exists(reason_file):
            with open(reason_file, encoding='utf-8') as f:
                reason = f.read().strip()
        gathered['serving'] = {
            'blessed': bool(summary._property(infra, 'blessed')),  # pylint: disable=protected-access
            'reason': reason
        }
    return gathered


def _metrics(evaluation_uri: str) -> Dict[str, Any]:
    """{'overall': row, 'per_class': {label index: row}}, a row mapping
    (metric, 'candidate' | 'baseline' | 'diff') to its value."""
    result: Dict[str, Any] = {'overall': {}, 'per_class': {}}
    for metrics in tfma.load_metrics(evaluation_uri):
        keys = metrics.slice_key.single_slice_keys
        if not keys:
            row = result['overall']
        elif len(keys) == 1 and keys[0].WhichOneof('kind') == 'int64_value':
            row = result['per_class'].setdefault(keys[0].int64_value, {})
        else:
            continue
        for entry in metrics.metric_keys_and_values:
            if entry.value.WhichOneof('type') != 'double_value':
                continue
            key = entry.key
            model = ('diff' if key.is_diff else 'baseline'
                     if key.model_name == 'baseline' else 'candidate')
            row[(key.name, model)] = entry.value.double_value.value
    return result


def _confusion(evaluation_uri: str) -> Optional[List[List[float]]]:
    """The candidate's confusion matrix on the overall slice, [true][pred]
    (the last column: no prediction), if the eval config asked for it."""
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for entry in plots.plot_keys_and_values:
            if (entry.key.name != _CONFUSION_PLOT or
                    entry.key.model_name == 'baseline'):
                continue
            matrices = (
                entry.value.multi_class_confusion_matrix_at_thresholds.matrices)
            if not matrices:
                continue
            cells = matrices[0].entries
            size = 1 + max(
                [max(c.actual_class_id, c.predicted_class_id) for c in cells] or
                [0])
            matrix = [[0.0] * size for _ in range(size)]
            for cell in cells:
                if cell.predicted_class_id >= 0:
                    matrix[cell.actual_class_id][cell.predicted_class_id] = (
                        cell.num_weighted_examples)
            return matrix
    return None


def _failures(evaluation_uri: str) -> List[str]:
    """The Evaluator's failed thresholds, one line each."""
    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            kind = 'change against the baseline' if key.is_diff else 'value'
            lines.append(f'{key.name} {kind} '
                         f'{failure.metric_value.double_value.value:.4f} fails '
                         f'{failure.metric_threshold}'.replace('\n', ' '))
    return lines


# Rendering -----------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #1a7f37; font-weight: bold; }
.bad { color: #b3261e; font-weight: bold; }
.none { color: #777; }
"""


def _table(header: List[str], rows: List[List[Any]], css: str = '') -> str:

    def cell(value):
        if isinstance(value, float):
            value = f'{value:.4g}'
        return html.escape(str(value))

    head = ''.join(f'<th>{cell(h)}</th>' for h in header)
    body = ''.join('<tr>' + ''.join(f'<td>{cell(v)}</td>'
                                    for v in row) + '</tr>'
                   for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _verdict(ok: Optional[bool], yes: str, no: str) -> str:
    if ok is None:
        return '<span class="none">not run</span>'
    return (f'<span class="ok">{html.escape(yes)}</span>'
            if ok else f'<span class="bad">{html.escape(no)}</span>')


def _none(text: str) -> str:
    return f'<p class="none">{html.escape(text)}</p>'


_COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd')


def _curves_svg(title: str, series: Dict[str, List[float]]) -> str:
    """A line chart by epoch as inline SVG (no plotting library: drawing
    with one cost seconds a run)."""
    width, height, left, top, bottom = 470, 240, 44, 24, 36
    # The legend right of the plot.
    plot_w, plot_h = width - left - 100, height - top - bottom
    values = [v for vs in series.values() for v in vs] or [0.0]
    low, high = min(values), max(values)
    high = high if high > low else low + 1.0
    epochs = max([len(vs) for vs in series.values()] or [1])

    def x(i):
        return left + plot_w * (i / max(epochs - 1, 1))

    def y(v):
        return top + plot_h * (1 - (v - low) / (high - low))

    parts = [
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"'
        ' fill="none" stroke="#999"/>',
        f'<text x="{width / 2}" y="15" text-anchor="middle">'
        f'{html.escape(title)}</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 4}" '
        'text-anchor="middle">epoch</text>'
    ]
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end" font-size="10">{v:.3g}</text>')
    for i in sorted({0, epochs - 1, (epochs - 1) // 2}):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" '
                     f'text-anchor="middle" font-size="10">{i + 1}</text>')
    for n, (name, vs) in enumerate(sorted(series.items())):
        color = _COLORS[n % len(_COLORS)]
        points = ' '.join(f'{x(i):.1f},{y(v):.1f}' for i, v in enumerate(vs))
        parts.append(f'<polyline points="{points}" fill="none" '
                     f'stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{top + 14 + 13 * n}" '
                     f'font-size="11" fill="{color}">'
                     f'{html.escape(name)}</text>')
    return (f'<svg class="curves" width="{width}" height="{height}" '
            'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" '
            f'font-size="12">{"".join(parts)}</svg>')


def _confusion_svg(matrix: List[List[float]], labels: List[str]) -> str:
    """The confusion matrix as an inline SVG heat map."""
    cell, left, top = 30, 12 + 7 * max(len(x) for x in labels), 40
    size = cell * len(labels)
    peak = max([max(row) for row in matrix] or [0]) or 1
    parts = [
        f'<text x="{left + size / 2}" y="14" text-anchor="middle">'
        'predicted</text>'
    ]
    for i, label in enumerate(labels):
        parts.append(f'<text x="{left + cell * i + cell / 2}" y="{top - 6}" '
                     f'text-anchor="middle" font-size="10">'
                     f'{html.escape(label[:6])}</text>')
        parts.append(f'<text x="{left - 4}" y="{top + cell * i + cell / 2 + 4}"'
                     f' text-anchor="end" font-size="10">'
                     f'{html.escape(label)}</text>')
        for j, count in enumerate(matrix[i]):
            shade = count / peak
            fill = 'rgb({},{},{})'.format(
                *[round(255 - (255 - c) * shade) for c in (8, 81, 156)])
            parts.append(f'<rect x="{left + cell * j}" y="{top + cell * i}" '
                         f'width="{cell}" height="{cell}" fill="{fill}" '
                         'stroke="#eee"/>')
            if count:
                ink = 'white' if shade > .5 else 'black'
                parts.append(
                    f'<text x="{left + cell * j + cell / 2}" '
                    f'y="{top + cell * i + cell / 2 + 4}" text-anchor="middle"'
                    f' font-size="10" fill="{ink}">{count:g}</text>')
    return (f'<svg class="confusion" width="{left + size + 10}" '
            f'height="{top + size + 10}" xmlns="http://www.w3.org/2000/svg" '
            f'font-family="sans-serif" font-size="12">{"".join(parts)}</svg>'
            '<p>Rows: true class; columns: predicted class.</p>')


def _class_name(class_names: List[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def _summary_section(run_id: str, run: Dict[str, Any]) -> str:
    rows = [[
        key,
        json.dumps(run[key]) if isinstance(run[key], (list, dict)) else run[key]
    ] for key in ('model', 'profile', 'span', 'failed', 'accuracy', 'blessed',
                  'pushed_model', 'new_version', 'wall_seconds') if key in run]
    return f'<p>Run <code>{html.escape(run_id)}</code></p>' + _table(
        ['', 'value'], rows)


def _statistics_section(
        statistics: Dict[str,
                         statistics_pb2.DatasetFeatureStatisticsList]) -> str:
    if not statistics:
        return _none('No statistics in this run.')
    rows = []
    for split, stats_list in statistics.items():
        for dataset in stats_list.datasets:
            for feature in dataset.features:
                name = '.'.join(feature.path.step) or feature.name
                if feature.HasField('num_stats'):
                    num = feature.num_stats
                    rows.append([
                        split, name, 'numeric',
                        num.common_stats.num_non_missing,
                        num.common_stats.num_missing, num.mean, num.std_dev,
                        num.min, num.max
                    ])
                else:
                    common = (feature.string_stats.common_stats
                              if feature.HasField('string_stats') else
                              feature.bytes_stats.common_stats)
                    rows.append([
                        split, name, 'bytes/string', common.num_non_missing,
                        common.num_missing, '', '', '', ''
                    ])
    table = _table([
        'split', 'feature', 'kind', 'present', 'missing', 'mean', 'std', 'min',
        'max'
    ], rows, 'statistics-table')
    # TFDV's Facets view (train against eval) loads Facets from the web.
    splits = list(statistics)
    facets = display_util.get_statistics_html(
        statistics[splits[0]],
        statistics[splits[1]] if len(splits) > 1 else None,
        lhs_name=splits[0],
        rhs_name=splits[-1])
    return (table + '<details><summary>TFDV\'s Facets Overview (it loads '
            'Facets\' scripts from the web)</summary>' + facets + '</details>')


def _anomalies_html(anomalies: anomalies_pb2.Anomalies) -> str:
    """TFDV's own table of the anomalies (its notebook display)."""
    frame = display_util.get_anomalies_dataframe(anomalies)
    if frame.empty:
        return '<p class="ok">No anomalies found.</p>'
    return frame.to_html(classes='anomalies-table')


def _anomalies_section(anomalies: Dict[str, anomalies_pb2.Anomalies]) -> str:
    if not anomalies:
        return _none('The ExampleValidator did not run.')
    return ''.join(f'<h3>{html.escape(split)}</h3>' + _anomalies_html(a)
                   for split, a in anomalies.items())


def _drift_section(drift: Optional[Dict[str, Any]]) -> str:
    if drift is None:
        return _none('The DataGate did not run.')
    if not drift['compared']:
        return _none('No previous span: this run had no earlier statistics '
                     'to compare with.')
    return ('<p>The training split against the last span that passed the '
            'gate:</p>' +
            ''.join(_anomalies_html(a) for a in drift['anomalies']))


def _training_section(report: Optional[Dict[str, Any]]) -> str:
    if not report:
        return _none('No training report: the Trainer did not run.')
    history = report.get('history') or {
        'val_accuracy': report.get('val_accuracy', [])
    }
    curves = ''.join(
        _curves_svg(
            title, {
                name: values
                for name, values in history.items()
                if ('loss' in name) == (title == 'loss')
            })
        for title in ('loss', 'accuracy'))
    rows = [[key, report[key]] for key in summary.TRAINING_KEYS[:-1] +
            ('steps', 'best_val_accuracy') if key in report]
    seconds = report.get('epoch_seconds') or []
    rows.append(['epochs', len(seconds)])
    rows.append(['training seconds', round(sum(seconds), 1)])
    return curves + _table(['', 'value'], rows)


def _metric_names(rows: List[Dict[Tuple[str, str], float]]) -> List[str]:
    return sorted({name for row in rows for name, _ in row})


def _metrics_section(metrics: Optional[Dict[str, Any]],
                     class_names: List[str]) -> str:
    if not metrics:
        return _none('The Evaluator did not run.')
    names = _metric_names([metrics['overall'], *metrics['per_class'].values()])
    overall = _table(['slice', *names], [[
        'overall',
        *[metrics['overall'].get((n, 'candidate'), '') for n in names]
    ]], 'metrics-overall')
    per_class = _table(['class', 'label', *names], [[
        _class_name(class_names, label), label,
        *[row.get((n, 'candidate'), '') for n in names]
    ] for label, row in sorted(metrics['per_class'].items())],
                       'metrics-per-class')
    return overall + '<h3>Per class (test split)</h3>' + per_class


def _confusion_section(matrix: Optional[List[List[float]]],
                       class_names: List[str]) -> str:
    if matrix is None:
        return _none('No confusion matrix: the Evaluator did not compute '
                     'MultiClassConfusionMatrixPlot.')
    labels = [_class_name(class_names, i) for i in range(len(matrix))]
    picture = _confusion_svg(matrix, labels)
    table = _table(
        ['true \\ predicted', *labels],
        [[labels[i], *[f'{c:g}' for c in row]] for i, row in enumerate(matrix)],
        'confusion-table')
    return picture + table


def _comparison_section(blessing: Optional[Dict[str, Any]],
                        metrics: Optional[Dict[str, Any]],
                        failures: List[str]) -> str:
    if blessing is None:
        return _none('The Evaluator did not run: no blessing.')
    verdict = _verdict(bool(blessing['blessed']), 'blessed', 'not blessed')
    if not blessing.get('baseline_model'):
        text = ('<p>No blessed model before this one: judged by its own '
                'thresholds only.</p>')
    else:
        overall = (metrics or {}).get('overall', {})
        names = _metric_names([overall])
        text = (f'<p>Baseline: <code>{html.escape(blessing["baseline_model"])}'
                '</code></p>' +
                _table(['metric', 'candidate', 'baseline', 'change'], [[
                    n,
                    overall.get((n, 'candidate'), ''),
                    overall.get((n, 'baseline'), ''),
                    overall.get((n, 'diff'), '')
                ] for n in names], 'comparison-table'))
    failed = ''.join(f'<li>{html.escape(line)}</li>' for line in failures)
    return (f'<p>Model: {verdict}</p>' + text +
            (f'<p>Failed thresholds:</p><ul>{failed}</ul>' if failed else ''))


def _serving_section(serving: Optional[Dict[str, Any]]) -> str:
    if serving is None:
        return _none('The serving check did not run.')
    reason = (f'<pre>{html.escape(serving["reason"])}</pre>'
              if serving['reason'] else '')
    return (
        '<p>The model in a model server: ' +
        _verdict(serving['blessed'], 'answered (infra-blessed)', 'refused') +
        '</p>' + reason)


# Once loaded, the page records how many figures the browser laid out (a
# headless browser's DOM then shows whether they render).
_COUNT_FIGURES = ('<script>window.addEventListener("load", () => {'
                  'document.body.dataset.figuresShown = Array.from('
                  'document.querySelectorAll("svg"))'
                  '.filter(f => f.getBBox().width > 0).length;});</script>')


def render(run_id: str,
           run: Dict[str, Any],
           *,
           class_names: List[str],
           statistics: Dict[str, statistics_pb2.DatasetFeatureStatisticsList],
           anomalies: Dict[str, anomalies_pb2.Anomalies],
           drift: Optional[Dict[str, Any]],
           trainer: Optional[Dict[str, Any]],
           metrics: Optional[Dict[str, Any]],
           confusion: Optional[List[List[float]]],
           blessing: Optional[Dict[str, Any]],
           serving: Optional[Dict[str, Any]],
           validation: Optional[List[str]] = None) -> str:
    """The report's HTML page: one <section id=...> per entry of
    `SECTIONS`, each saying so when its component did not run."""
    bodies = {
        'summary': _summary_section(run_id, run),
        'statistics': _statistics_section(statistics),
        'anomalies': _anomalies_section(anomalies),
        'drift': _drift_section(drift),
        'training': _training_section(trainer),
        'metrics': _metrics_section(metrics, class_names),
        'confusion': _confusion_section(confusion, class_names),
        'comparison': _comparison_section(blessing, metrics, validation or []),
        'serving': _serving_section(serving),
    }
    title = html.escape(f'{run.get("model", "")} pipeline run {run_id}')
    sections = ''.join(f'<section id="{key}"><h2>{html.escape(heading)}</h2>'
                       f'{bodies[key]}</section>' for key, heading in SECTIONS)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<title>{title}</title><style>{_STYLE}</style></head>'
            f'<body><h1>{title}</h1>{sections}{_COUNT_FIGURES}</body></html>')
