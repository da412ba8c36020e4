"""`--set KEY=VALUE` for a model: parsed, checked, listed.

What a setting is and takes lives in common/settings.py, a family's
per-profile values in pipeline/profiles.py; this checks a run's overrides
against both before anything heavy loads, and lists them
(`--list-settings`).
"""

import difflib
import json
from typing import Any, Dict, Tuple

from common import settings
from pipeline import profiles


class SettingError(ValueError):
    """A `--set KEY=VALUE` the model's configuration does not accept."""


def setting_defaults(model: str) -> Dict[str, Dict[str, Any]]:
    """Every settable key of `model` -> profile -> its default value."""
    keys: Dict[str, Dict[str, Any]] = {}
    for profile in profiles.PROFILES:
        values = {
            **settings.family_defaults(model),
            **profiles.MODELS[model].profiles[profile]
        }
        for key, value in values.items():
            keys.setdefault(key, {})[profile] = value
    return keys


def parse_setting(text: str) -> Tuple[str, Any]:
    """`KEY=VALUE` -> (key, value): JSON when it parses, else the text."""
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise SettingError(f'expected KEY=VALUE, got {text!r}')
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return 'true or false'
    if isinstance(value, int):
        return 'an integer'
    if isinstance(value, float):
        return 'a number'
    if isinstance(value, list):
        inner = _type_name(value[0]) if value else 'values'
        return f'a list of {inner.replace("an ", "").replace("a ", "")}s'
    return 'text'


def _matches(value: Any, default: Any) -> bool:
    """Whether `value` has the type of `default` (an int is a number)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return (isinstance(value, (int, float)) and not isinstance(value, bool))
    if isinstance(default, list):
        return (isinstance(value, list) and
                all(_matches(v, default[0]) for v in value)
                if default else isinstance(value, list))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def check_overrides(model: str, overrides) -> None:
    """Raises SettingError on the first override `model` refuses.

    Raises SettingError naming the first key or value `model` does not accept:
    unknown keys (with the closest known ones), values whose type differs from
    the default's, words outside the setting's choices, numbers below its bound
    (common/settings.py).
    """
    defaults = setting_defaults(model)
    for key, value in overrides:
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=3)
            hint = (f'; did you mean {" or ".join(close)}?'
                    if close else '; `python -m pipeline run --model '
                    f'{model} --list-settings` lists them')
            raise SettingError(f'--set {key}: no such setting for {model}'
                               f'{hint}')
        default = next(iter(defaults[key].values()))
        if not _matches(value, default):
            raise SettingError(
                f'--set {key}={json.dumps(value)}: expected '
                f'{_type_name(default)}, like {json.dumps(default)}')
        setting = settings.SETTINGS[key]
        if setting.choices and value not in setting.choices:
            raise SettingError(f'--set {key}={value}: expected one of '
                               f'{", ".join(setting.choices)}')
        counts = setting.bound == settings.COUNT
        numbers = value if isinstance(value, list) else [value]
        if any(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v <
            (1 if counts else 0) for v in numbers):
            raise SettingError(f'--set {key}={json.dumps(value)}: must be '
                               f'{"positive" if counts else "0 or more"}')
        if setting.bound == settings.ABOVE_ZERO and value <= 0:
            raise SettingError(f'--set {key}={value}: must be above 0')


def settings_table(model: str) -> str:
    """Every settable key of `model`: its default per profile, what it does."""
    rows = [('key', *profiles.PROFILES, 'what it does')]
    for key, values in sorted(setting_defaults(model).items()):
        rows.append((key, *(json.dumps(values[p]) for p in profiles.PROFILES),
                     settings.SETTINGS[key].help))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return '\n'.join('  '.join([c.ljust(w) for c, w in zip(row, widths)] +
                               [row[-1]]).rstrip() for row in rows)
