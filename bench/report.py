"""The benchmark's report: targets, JSON, a plot and a summary table.

`write_report(results, folder)` takes the results dict `bench.__main__`
assembles and writes `report.json` and `report.png` (matplotlib, Agg
backend): per-component wall time of the pipeline next to the by-hand
script's phases, and ingest rows/s against data size.
"""

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from bench import common

# Targets (docs/results/performance.md; issue 15).
MAX_PIPELINE_OVER_BY_HAND = {'convnet': 1.0, 'rnn': 1.5}  # full profile
MAX_ACCURACY_GAP = 0.005  # convnet, pipeline vs by hand, full profile
MIN_TRAINER_THROUGHPUT = 0.95  # make_dataset fit / arrays fit
MAX_GROWTH_EXPONENT = 1.0  # ingest + statistics + transform
MAX_SMOKE_SECONDS = 60.0  # smoke profile, end to end, each model
MAX_CACHED_RERUN_SECONDS = 15.0  # a rerun every component takes from cache
MIN_BATCHING_SPEEDUP = 3.0  # model server, 32 clients, batching on / off
MAX_GRPC_OVERHEAD_MS = 0.5  # model server, gRPC p50 over in-process p50
MAX_REST_KEPT_ALIVE_MS = 2.0  # matmul model, one kept-alive REST connection
MIN_REST_SPEEDUP = 3.0  # 64 REST connections, this front end / previous

_COMPONENT_ORDER = ('startup', 'FileBasedExampleGen', 'StatisticsGen',
                    'Transform', 'Trainer', 'Evaluator', 'ServingCheck',
                    'other components')
_PHASE_ORDER = ('startup', 'load', 'normalize', 'build', 'fit', 'evaluate',
                'save')
# The plot's colours: one per phase of the job, the same on both sides.
_PHASE_OF = {
    'startup': 'start-up (imports)',
    'FileBasedExampleGen': 'read and check the data',
    'StatisticsGen': 'read and check the data',
    'load': 'read and check the data',
    'Transform': 'normalize',
    'normalize': 'normalize',
    'Trainer': 'build, train, save',
    'build': 'build, train, save',
    'fit': 'build, train, save',
    'save': 'build, train, save',
    'Evaluator': 'evaluate',
    'ServingCheck': 'evaluate',
    'evaluate': 'evaluate',
    'other components': 'other',
}
_PHASE_COLORS = {
    'start-up (imports)': '#9e9e9e',
    'read and check the data': '#1f77b4',
    'normalize': '#17becf',
    'build, train, save': '#ff7f0e',
    'evaluate': '#2ca02c',
    'other': '#d62728',
}


def _target(value: Optional[float],
            limit: float,
            at_most: bool,
            measured: bool = True,
            note: str = '') -> Dict[str, Any]:
    met = None
    if measured and value is not None:
        met = value <= limit if at_most else value >= limit
    return {
        'value': value,
        'limit': limit,
        'rule': '<=' if at_most else '>=',
        'met': met,
        'note': note
    }


def _slowest(runs: Dict[str, Any], key: str) -> Optional[float]:
    values = [
        run[key]
        for run in runs.values()
        if isinstance(run, dict) and run.get(key) is not None
    ]
    return max(values) if values else None


def evaluate_targets(results: Dict[str, Any]) -> Dict[str, Any]:
    """Every target, each {value, limit, rule, met, note}.

    `met` is None when the run did not measure the target as stated (e.g.
    the full-profile ratio in a --quick run).
    """
    # The full profile as it is: settings (--set) make another comparison.
    full = results.get('profile') == 'full' and not results.get('overrides')
    ratios = results.get('ratios') or {}
    cpu_ratios = results.get('cpu_ratios') or {}
    throughput = (results.get('throughput') or {}).get('convnet') or {}
    scaling = results.get('scaling') or {}
    smoke = results.get('smoke') or {}
    serving = results.get('serving') or {}
    front_end = serving.get('front_end') or {}
    targets = {}
    for model, limit in MAX_PIPELINE_OVER_BY_HAND.items():
        targets[f'{model}_pipeline_over_by_hand'] = _target(
            ratios.get(model), limit, True, full,
            f'CPU seconds ratio: {cpu_ratios.get(model)}'
            if full else f'measured on the {results.get("profile")} profile'
            f'{_settings(results)}; the target is for full as it is')
    pipeline = (results.get('pipeline') or {}).get('convnet') or {}
    hand = (results.get('by_hand') or {}).get('convnet') or {}
    gap = None
    if (pipeline.get('accuracy') is not None and
            hand.get('accuracy') is not None):
        gap = round(abs(pipeline['accuracy'] - hand['accuracy']), 4)
    targets['convnet_accuracy_gap'] = _target(
        gap, MAX_ACCURACY_GAP, True, full,
        f'test accuracy, pipeline {pipeline.get("accuracy")}, by hand '
        f'{hand.get("accuracy")}')
    targets.update({
        'trainer_throughput_ratio':
            _target(throughput.get('ratio'),
                    MIN_TRAINER_THROUGHPUT,
                    False,
                    note=f'per CPU second: {throughput.get("cpu_ratio")}'),
        'ingest_growth_exponent':
            _target(
                scaling.get('growth_exponent'),
                MAX_GROWTH_EXPONENT,
                True,
                note='seconds ~ rows^k from the smallest to the largest size'),
        'smoke_end_to_end_seconds':
            _target(_slowest(smoke, 'wall_seconds'),
                    MAX_SMOKE_SECONDS,
                    True,
                    note='the slower of the two models'),
        'cached_rerun_seconds':
            _target(_slowest(
                results.get('reruns') or {}, 'cached_wall_seconds'),
                    MAX_CACHED_RERUN_SECONDS,
                    True,
                    note='the slower of the two models, smoke homes'),
        'serving_batching_speedup_at_32':
            _target(serving.get('batching_speedup_at_32'),
                    MIN_BATCHING_SPEEDUP,
                    False,
                    note='requests/s at 32 clients, batching on / off'),
        'serving_grpc_overhead_p50_ms':
            _target((serving.get('latency_ms') or {}).get('overhead_p50'),
                    MAX_GRPC_OVERHEAD_MS,
                    True,
                    note='gRPC Predict p50 minus in-process p50'),
        'serving_rest_kept_alive_p50_ms':
            _target(
                ((front_end.get('current') or {}).get('rest_1_connection') or
                 {}).get('p50_ms'),
                MAX_REST_KEPT_ALIVE_MS,
                True,
                note='matmul model, wrk -c1 (bench/serving_front_end.py)'),
        'serving_rest_64_connections_speedup':
            _target(max(
                (front_end.get(name) or {}).get('rest_64_connections') or 0
                for name in ('ratios', 'ratios_2_processes')) or None,
                    MIN_REST_SPEEDUP,
                    False,
                    note='requests/s, this front end (the better of 1 and '
                    '2 --server_processes) over the previous, same run'),
    })
    return targets


def pipeline_breakdown(run: Dict[str, Any]) -> List[Tuple[str, float]]:
    """A pipeline run's (name, seconds) parts, in _COMPONENT_ORDER.

    Start-up, the costly components, the rest summed.
    """
    components = dict(run.get('component_seconds') or {})
    parts = {'startup': max(0.0, float(run.get('startup_seconds') or 0.0))}
    for name in _COMPONENT_ORDER[1:-1]:
        parts[name] = float(components.pop(name, 0.0))
    parts['other components'] = float(sum(components.values()))
    return [(name, round(parts[name], 1)) for name in _COMPONENT_ORDER]


def by_hand_breakdown(run: Dict[str, Any]) -> List[Tuple[str, float]]:
    """(name, seconds) of a by-hand run: start-up, then its phases."""
    phases = dict(run.get('phase_seconds') or {})
    parts = {'startup': max(0.0, float(run.get('startup_seconds') or 0.0))}
    parts.update(phases)
    return [
        (name, round(float(parts.get(name, 0.0)), 1)) for name in _PHASE_ORDER
    ]


def _bars(axis, results: Dict[str, Any]) -> None:
    """Draws wall time per model, pipeline next to by hand.

    Stacked by component or phase and coloured by phase; the test accuracy
    on top.
    """
    labels = []
    for x, (label, stack, accuracy) in enumerate(_stacks(results)):
        labels.append(label)
        bottom = 0.0
        for name, seconds in stack:
            if seconds > 0:
                axis.bar(x,
                         seconds,
                         bottom=bottom,
                         color=_PHASE_COLORS[_PHASE_OF[name]],
                         edgecolor='white',
                         linewidth=0.8)
                bottom += seconds
        accuracy_text = '' if accuracy is None else f'\nacc. {accuracy:.4f}'
        axis.text(x,
                  bottom,
                  f'{bottom:.0f} s{accuracy_text}',
                  ha='center',
                  va='bottom',
                  fontsize=7)
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels, fontsize=8)
    axis.set_ylabel('wall seconds')
    axis.margins(y=0.15)
    axis.set_title(f'Pipeline vs by hand ({results.get("profile", "?")} '
                   'profile)')
    from matplotlib import patches  # pylint: disable=import-outside-toplevel
    axis.legend(handles=[
        patches.Patch(color=color, label=phase)
        for phase, color in _PHASE_COLORS.items()
    ],
                fontsize=7,
                loc='upper center',
                bbox_to_anchor=(0.5, -0.12),
                ncol=3)


def _stacks(results: Dict[str, Any]):
    """(label, [(component or phase, seconds)], accuracy) per bar."""
    for model, run in (results.get('pipeline') or {}).items():
        if isinstance(run, dict) and 'wall_seconds' in run:
            yield (f'{model}\npipeline', pipeline_breakdown(run),
                   run.get('accuracy'))
        hand = (results.get('by_hand') or {}).get(model)
        if isinstance(hand, dict) and 'wall_seconds' in hand:
            yield (f'{model}\nby hand', by_hand_breakdown(hand),
                   hand.get('accuracy'))


def _scaling(axis, results: Dict[str, Any]) -> None:
    points = (results.get('scaling') or {}).get('points') or []
    if points:
        scales = [p['scale'] for p in points]
        axis.plot(scales, [p['rows_per_second'] for p in points],
                  'o-',
                  label='ExampleGen+StatisticsGen+Transform')
        for name in ('FileBasedExampleGen', 'StatisticsGen', 'Transform'):
            axis.plot(
                scales,
                [p['component_rows_per_second'].get(name) for p in points],
                '.--',
                alpha=0.6,
                label=name)
        axis.set_xscale('log', base=2)
        axis.set_xticks(scales)
        axis.set_xticklabels([f'{s:g}x' for s in scales])
        axis.legend(fontsize=7)
    axis.set_xlabel('size (x Fashion-MNIST train + test)')
    axis.set_ylabel('rows / s')
    axis.set_title('Ingest throughput vs data size')


def _serving(axis, results: Dict[str, Any]) -> None:
    """Requests/s against concurrent clients, one line per server mode."""
    serving = results.get('serving') or {}
    for mode, by_clients in (serving.get('throughput_rps') or {}).items():
        if not isinstance(by_clients, dict):
            continue
        clients = sorted(by_clients, key=int)
        axis.plot([int(c) for c in clients], [by_clients[c] for c in clients],
                  'o-',
                  label=mode.replace('_', ' '))
    latency = serving.get('latency_ms') or {}
    title = 'Model server'
    if latency:
        title += (f': gRPC p50 {(latency.get("grpc") or {}).get("p50")} ms, '
                  f'{latency.get("overhead_p50")} ms over in-process')
    axis.set_title(title, fontsize=9)
    if axis.lines:
        counts = sorted(
            {int(x) for line in axis.lines for x in line.get_xdata()})
        axis.set_xscale('log', base=2)
        axis.set_xticks(counts)
        axis.set_xticklabels([str(c) for c in counts])
        axis.legend(fontsize=7)
    axis.set_xlabel('concurrent clients')
    axis.set_ylabel('requests / s')


def plot(results: Dict[str, Any], path: Path) -> None:
    """Writes the report's figure.

    Wall time bars, rows/s against data size, and the model server's
    requests/s against clients.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, (bars, scaling_axis, serving_axis) = pyplot.subplots(
        1, 3, figsize=(18, 5.5), gridspec_kw={'width_ratios': [3, 2, 2]})
    _bars(bars, results)
    _scaling(scaling_axis, results)
    _serving(serving_axis, results)
    machine = results.get('machine') or {}
    figure.suptitle(
        f'bench ({results.get("mode", "?")}{_settings(results)}), '
        f'{machine.get("cpus", "?")} '
        f'CPUs, load average at start {machine.get("load_start")}, at end '
        f'{machine.get("load_end")}',
        fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _settings(results: Dict[str, Any]) -> str:
    """', settings epochs=3' for a run given `--set` settings."""
    overrides = results.get('overrides')
    return f', settings {" ".join(overrides)}' if overrides else ''


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}' if math.isfinite(value) else str(value)
    return str(value)


def _epochs_by_batch(run: Dict[str, Any]) -> str:
    """The epochs trained and the global batch, as '15x128'.

    Of a pipeline run (its Trainer's report) or of a by-hand run.
    """
    training = run.get('training')
    if training:
        return f'{common.trained_epochs(run)}x{training.get("global_batch")}'
    if run.get('epochs') is None:
        return '-'
    return f'{run["epochs"]}x{run.get("batch_size")}'


def format_table(results: Dict[str, Any]) -> str:
    """The printed summary: walls, ratios, throughput, scaling, targets."""
    machine = results.get('machine') or {}
    lines = [
        f'bench ({results.get("mode")}, profile '
        f'{results.get("profile")}'
        f'{_settings(results)}), load average at start '
        f'{machine.get("load_start")}, at end {machine.get("load_end")}', ''
    ]
    lines.append(f'{"":<24}{"pipeline s":>12}{"by hand s":>12}{"ratio":>8}'
                 f'{"CPU s ratio":>13}{"accuracy":>20}')
    for model, run in (results.get('pipeline') or {}).items():
        hand = (results.get('by_hand') or {}).get(model) or {}
        cpu_ratio = (results.get('cpu_ratios') or {}).get(model)
        accuracy = (f'{_fmt(run.get("accuracy"), 4)} / '
                    f'{_fmt(hand.get("accuracy"), 4)}')
        lines.append(f'{model:<24}{_fmt(run.get("wall_seconds")):>12}'
                     f'{_fmt(hand.get("wall_seconds")):>12}'
                     f'{_fmt((results.get("ratios") or {}).get(model), 2):>8}'
                     f'{_fmt(cpu_ratio, 2):>13}{accuracy:>20}')
        lines.append(f'  {"epochs x batch":<22}{_epochs_by_batch(run):>12}'
                     f'{_epochs_by_batch(hand):>12}')
        for name, seconds in pipeline_breakdown(run):
            lines.append(f'  {name:<22}{_fmt(seconds):>12}')
        for name, seconds in by_hand_breakdown(hand):
            lines.append(f'  {"by hand " + name:<22}{"":>12}'
                         f'{_fmt(seconds):>12}')
    smoke = results.get('smoke') or {}
    if smoke:
        lines.append('')
        lines.append('smoke profile, end to end: ' +
                     ', '.join(f'{m} {_fmt(r.get("wall_seconds"))} s'
                               for m, r in smoke.items()
                               if isinstance(r, dict)))
    reruns = results.get('reruns') or {}
    if reruns:
        lines.append('reruns of the smoke homes (first: re-evaluates against '
                     'the model it pushed; then every component cached): ' +
                     ', '.join(f'{m} {_fmt(r.get("first_wall_seconds"))} s, '
                               f'{_fmt(r.get("cached_wall_seconds"))} s'
                               for m, r in reruns.items()
                               if isinstance(r, dict)))
    throughput = results.get('throughput') or {}
    if throughput:
        lines += [
            '', f'{"Trainer throughput":<24}{"make_dataset":>13}'
            f'{"arrays":>10}{"ratio":>8}{"cpu ratio":>11}'
            f'{"input only":>12}'
        ]
        for model, t in throughput.items():
            if not isinstance(t, dict) or 'ratio' not in t:
                lines.append(f'{model:<24}{t}')
                continue
            fit = t['fit_examples_per_second']
            lines.append(
                f'{model + " (ex/s)":<24}{_fmt(fit["make_dataset"]):>13}'
                f'{_fmt(fit["arrays"]):>10}{_fmt(t["ratio"], 3):>8}'
                f'{_fmt(t["cpu_ratio"], 3):>11}'
                f'{_fmt(t["input_only_examples_per_second"]["warm"]):>12}')
    points = (results.get('scaling') or {}).get('points') or []
    if points:
        lines += [
            '', f'{"Ingest scale":<14}{"rows":>9}{"ExampleGen":>12}'
            f'{"Stats":>8}{"Transform":>11}{"total s":>9}{"rows/s":>9}'
        ]
        for p in points:
            s = p['component_seconds']
            lines.append(
                f'{str(p["scale"]) + "x":<14}{p["total_rows"]:>9}'
                f'{_fmt(s["FileBasedExampleGen"]):>12}'
                f'{_fmt(s["StatisticsGen"]):>8}{_fmt(s["Transform"]):>11}'
                f'{_fmt(p["ingest_seconds"]):>9}'
                f'{_fmt(p["rows_per_second"]):>9}')
        lines.append(f'growth exponent (1 = linear): '
                     f'{results["scaling"].get("growth_exponent")}')
    serving = results.get('serving')
    if isinstance(serving, dict):
        lines.append('')
        if 'latency_ms' in serving:
            latency = serving['latency_ms']
            lines.append(
                f'serving: gRPC p50 {latency["grpc"]["p50"]} ms, overhead '
                f'p50 {latency.get("overhead_p50")} ms, batching speed-up at '
                f'32 clients {serving.get("batching_speedup_at_32")}x')
            for mode, by_clients in (serving.get('throughput_rps') or
                                     {}).items():
                if isinstance(by_clients, dict):
                    lines.append(f'  {mode + " (requests/s)":<30}' +
                                 '  '.join(f'{c} clients {_fmt(rps)}'
                                           for c, rps in by_clients.items()))
        else:
            lines.append(f'serving: {serving.get("status", serving)}')
    lines += ['', 'targets']
    for name, target in (results.get('targets') or {}).items():
        verdict = {
            True: 'met',
            False: 'NOT met',
            None: 'not measured'
        }[target['met']]
        lines.append(f'  {name:<34}{_fmt(target["value"], 3):>9} '
                     f'{target["rule"]} {target["limit"]:<6} {verdict}' +
                     (f'  ({target["note"]})' if target['note'] else ''))
    for section, error in (results.get('errors') or {}).items():
        lines.append(f'error in {section}: {error.splitlines()[0][:200]}')
    return '\n'.join(lines)


def write_report(results: Dict[str, Any], folder: Path) -> Tuple[Path, Path]:
    """Adds the targets to `results`, writes report.json and report.png.

    Returns:
        (JSON path, PNG path).
    """
    folder.mkdir(parents=True, exist_ok=True)
    results['targets'] = evaluate_targets(results)
    json_path, png_path = folder / 'report.json', folder / 'report.png'
    json_path.write_text(json.dumps(results, indent=2, default=str) + '\n',
                         encoding='utf-8')
    plot(results, png_path)
    return json_path, png_path
