"""The run report's HTML: one section per part of the run, from plain values.

`render` takes what pipeline/report.py `gather` read from ML Metadata and
the artifacts (plain values and protos), so it is tested on small inputs
apart from a run.
"""

import html
import json
from typing import Any, Dict, List, Optional, Tuple

from tensorflow_data_validation.utils import display_util
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import summary
from pipeline import svg_charts

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
        svg_charts.curves(
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
    picture = svg_charts.confusion_matrix(matrix, labels)
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
    """The report's HTML page.

    One <section id=...> per entry of `SECTIONS`, each saying so when its
    component did not run.
    """
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
