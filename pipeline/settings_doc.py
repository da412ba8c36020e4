"""docs/settings.md, written from the settings table: `make settings-doc`.

`python -m pipeline.settings_doc PATH` writes the page; with `--check` it
exits 1 when PATH differs from what it would write (`make lint` and
tests/test_settings_doc.py run that), so the page never drifts from
common/settings.py and the families' profiles (pipeline/profiles.py).
"""

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from common import settings
from pipeline import profiles
from pipeline import setting_checks

PAGE = 'docs/settings.md'


def _values(setting: settings.Setting, example: Any) -> str:
    """What a setting takes: its words, or its type and least value."""
    if setting.choices:
        return 'one of ' + ', '.join(f'`{c}`' for c in setting.choices)
    kind = setting_checks._type_name(example)  # pylint: disable=protected-access
    if isinstance(example, bool) or isinstance(example, str):
        return kind
    least = {
        settings.NON_NEGATIVE: '0 or more',
        settings.COUNT: '1 or more',
        settings.ABOVE_ZERO: 'above 0',
    }[setting.bound]
    return f'{kind}, {least}'


def _default(name: str, families: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """The default: one value, or each family's per profile."""
    found = {
        model: values[name]
        for model, values in families.items()
        if name in values
    }
    distinct = {
        json.dumps(p[profile])
        for p in found.values()
        for profile in profiles.PROFILES
    }
    if len(distinct) == 1:
        return f'`{distinct.pop()}`'
    parts = []
    for model, by_profile in found.items():
        shown = [json.dumps(by_profile[p]) for p in profiles.PROFILES]
        if len(set(shown)) == 1:
            parts.append(f'{model} `{shown[0]}`')
        else:
            parts.append(f'{model} ' + ' / '.join(f'`{v}`' for v in shown))
    return '; '.join(parts)


def render() -> str:
    """The page's text."""
    families = {
        model: setting_checks.setting_defaults(model)
        for model in profiles.MODELS
    }
    profile_names = ' / '.join(profiles.PROFILES)
    lines: List[str] = [
        '# Settings',
        '',
        '<!-- Generated from common/settings.py and pipeline/profiles.py by '
        '`make settings-doc`; do not edit by hand. -->',
        '',
        'Every setting of a run, set with `--set KEY=VALUE` (the value is '
        'read as JSON when it parses: `--set conv_filters=[16,32]`, '
        '`--set warm_start=true`; else as text). `python -m pipeline run '
        '--model M --list-settings` prints the same for one family. A value '
        "of the wrong type, a word outside a setting's choices or a number "
        'below its least value stops the run before it starts (exit 2). '
        'Settings given with `--set` are held at their values by a Tuner '
        '(docs/tuning.md).',
        '',
        f'Defaults shown as `a / b` are the `{profile_names}` profiles\' '
        '(`--profile`); a family named before a value is the only one that '
        'takes the setting, or has its own default.',
    ]
    for group in settings.GROUPS:
        lines += [
            '', f'## {group}', '',
            '| Setting | Default | Values | Families | What it does |',
            '| --- | --- | --- | --- | --- |'
        ]
        for setting in settings.SETTINGS.values():
            if setting.group != group:
                continue
            takes = [m for m in profiles.MODELS if setting.name in families[m]]
            example = next(iter(families[takes[0]][setting.name].values()))
            who = ('all'
                   if len(takes) == len(profiles.MODELS) else ', '.join(takes))
            lines.append(f'| `{setting.name}` | '
                         f'{_default(setting.name, families)} | '
                         f'{_values(setting, example)} | {who} | '
                         f'{setting.help} |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Writes (or with --check, compares) the page; 1 when stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('path', nargs='?', default=PAGE)
    parser.add_argument('--check',
                        action='store_true',
                        help='exit 1 if the page is not what it would be')
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        try:
            with open(args.path, encoding='utf-8') as page:
                current = page.read()
        except FileNotFoundError:
            current = ''
        if current != text:
            print(f'{args.path}: stale, run `make settings-doc`',
                  file=sys.stderr)
            return 1
        return 0
    with open(args.path, 'w', encoding='utf-8') as page:
        page.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
