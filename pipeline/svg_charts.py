"""Small inline SVG charts for the run report: curves and a confusion matrix.

Plain strings, no plotting library: the report is one self-contained HTML
file (pipeline/report_html.py).
"""

import html
from typing import Dict, List

COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd')


def curves(title: str, series: Dict[str, List[float]]) -> str:
    """A line chart by epoch as inline SVG.

    (no plotting library: drawing with one cost seconds a run).
    """
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
        color = COLORS[n % len(COLORS)]
        points = ' '.join(f'{x(i):.1f},{y(v):.1f}' for i, v in enumerate(vs))
        parts.append(f'<polyline points="{points}" fill="none" '
                     f'stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{top + 14 + 13 * n}" '
                     f'font-size="11" fill="{color}">'
                     f'{html.escape(name)}</text>')
    return (f'<svg class="curves" width="{width}" height="{height}" '
            'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" '
            f'font-size="12">{"".join(parts)}</svg>')


def confusion_matrix(matrix: List[List[float]], labels: List[str]) -> str:
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
