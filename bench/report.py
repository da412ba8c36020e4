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

# Targets (README, Performance).
MAX_PIPELINE_OVER_BY_HAND = 1.25  # convnet, full profile
MIN_TRAINER_THROUGHPUT = 0.95  # make_dataset fit / arrays fit
MAX_GROWTH_EXPONENT = 1.0  # ingest + statistics + transform
MAX_SMOKE_SECONDS = 120.0  # smoke profile, end to end

_COMPONENT_ORDER = ('startup', 'FileBasedExampleGen', 'StatisticsGen',
                    'Transform', 'Trainer', 'Evaluator', 'ServingCheck',
                    'other components')
_PHASE_ORDER = ('startup', 'load', 'normalize', 'build', 'fit', 'evaluate',
                'save')


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


def evaluate_targets(results: Dict[str, Any]) -> Dict[str, Any]:
    """The four targets, each {value, limit, rule, met, note}.

    `met` is None when the run did not measure the target as stated (e.g.
    the full-profile ratio in a --quick run).
    """
    profile = results.get('profile')
    ratio = (results.get('ratios') or {}).get('convnet')
    throughput = (results.get('throughput') or {}).get('convnet') or {}
    scaling = results.get('scaling') or {}
    smoke = results.get('smoke') or {}
    smoke_walls = [
        run.get('wall_seconds')
        for run in smoke.values()
        if isinstance(run, dict) and 'wall_seconds' in run
    ]
    return {
        'convnet_pipeline_over_by_hand':
            _target(
                ratio, MAX_PIPELINE_OVER_BY_HAND, True, profile == 'full',
                (f'CPU seconds ratio: '
                 f'{(results.get("cpu_ratios") or {}).get("convnet")}')
                if profile == 'full' else
                f'measured on the {profile} profile; the target is for full'),
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
            _target(max(smoke_walls) if smoke_walls else None,
                    MAX_SMOKE_SECONDS,
                    True,
                    note='the slower of the two models'),
    }


def pipeline_breakdown(run: Dict[str, Any]) -> List[Tuple[str, float]]:
    """(name, seconds) of a pipeline run: start-up, the costly components,
    the rest summed; in _COMPONENT_ORDER."""
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


def plot(results: Dict[str, Any], path: Path) -> None:
    """Writes the report's figure: wall time bars, and rows/s vs size."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, (bars, scaling_axis) = pyplot.subplots(
        1, 2, figsize=(14, 5.5), gridspec_kw={'width_ratios': [3, 2]})
    labels, stacks = [], []
    for model, run in (results.get('pipeline') or {}).items():
        if isinstance(run, dict) and 'wall_seconds' in run:
            labels.append(f'{model}\npipeline')
            stacks.append(pipeline_breakdown(run))
        hand = (results.get('by_hand') or {}).get(model)
        if isinstance(hand, dict) and 'wall_seconds' in hand:
            labels.append(f'{model}\nby hand')
            stacks.append(by_hand_breakdown(hand))
    names = []
    for stack in stacks:
        names += [n for n, _ in stack if n not in names]
    colors = {
        name: pyplot.get_cmap('tab20')(i % 20) for i, name in enumerate(names)
    }
    drawn = set()
    for x, stack in enumerate(stacks):
        bottom = 0.0
        for name, seconds in stack:
            if seconds <= 0:
                continue
            bars.bar(x,
                     seconds,
                     bottom=bottom,
                     color=colors[name],
                     label=name if name not in drawn else None,
                     edgecolor='white',
                     linewidth=0.5)
            drawn.add(name)
            bottom += seconds
        bars.text(x,
                  bottom,
                  f'{bottom:.0f} s',
                  ha='center',
                  va='bottom',
                  fontsize=8)
    bars.set_xticks(range(len(labels)))
    bars.set_xticklabels(labels, fontsize=8)
    bars.set_ylabel('wall seconds')
    bars.set_title(f'Pipeline components vs by hand '
                   f'({results.get("profile", "?")} profile)')
    if drawn:
        bars.legend(fontsize=7, loc='upper right')

    points = (results.get('scaling') or {}).get('points') or []
    if points:
        scales = [p['scale'] for p in points]
        scaling_axis.plot(scales, [p['rows_per_second'] for p in points],
                          'o-',
                          label='ExampleGen+StatisticsGen+Transform')
        for name in ('FileBasedExampleGen', 'StatisticsGen', 'Transform'):
            scaling_axis.plot(
                scales,
                [p['component_rows_per_second'].get(name) for p in points],
                '.--',
                alpha=0.6,
                label=name)
        scaling_axis.set_xscale('log', base=2)
        scaling_axis.set_xticks(scales)
        scaling_axis.set_xticklabels([f'{s:g}x' for s in scales])
        scaling_axis.legend(fontsize=7)
    scaling_axis.set_xlabel('size (x Fashion-MNIST train + test)')
    scaling_axis.set_ylabel('rows / s')
    scaling_axis.set_title('Ingest throughput vs data size')
    load = (results.get('machine') or {}).get('load_start')
    figure.suptitle(
        f'bench ({results.get("mode", "?")}), '
        f'{(results.get("machine") or {}).get("cpus", "?")} CPUs, '
        f'load at start {load}',
        fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}' if math.isfinite(value) else str(value)
    return str(value)


def format_table(results: Dict[str, Any]) -> str:
    """The printed summary: walls, ratios, throughput, scaling, targets."""
    lines = [
        f'bench ({results.get("mode")}, profile '
        f'{results.get("profile")}), load at start '
        f'{(results.get("machine") or {}).get("load_start")}', ''
    ]
    lines.append(f'{"":<24}{"pipeline s":>12}{"by hand s":>12}{"ratio":>8}'
                 f'{"CPU s ratio":>13}')
    for model, run in (results.get('pipeline') or {}).items():
        hand = (results.get('by_hand') or {}).get(model) or {}
        cpu_ratio = (results.get('cpu_ratios') or {}).get(model)
        lines.append(f'{model:<24}{_fmt(run.get("wall_seconds")):>12}'
                     f'{_fmt(hand.get("wall_seconds")):>12}'
                     f'{_fmt((results.get("ratios") or {}).get(model), 2):>8}'
                     f'{_fmt(cpu_ratio, 2):>13}')
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
