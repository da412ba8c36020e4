"""The whole pipeline, timed: `python -m pipeline run` in a fresh home.

Its final JSON line carries `wall_seconds` (from interpreter start, before
TFX's imports) and `component_seconds` (each component's launch to end);
what is in neither component is start-up: imports and compiling the
pipeline.
"""

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from bench import common


def run_pipeline(model: str,
                 profile: str,
                 home: Path,
                 data: Optional[str] = None,
                 beam_args: Sequence[str] = (),
                 overrides: Sequence[Tuple[str, Any]] = (),
                 log_path: Optional[Path] = None,
                 fresh: bool = True) -> Dict[str, Any]:
    """Runs the pipeline once in `home` and returns its JSON.

    Args:
        model: `convnet` or `rnn`.
        profile: `smoke` or `full`.
        home: The run's home folder.
        data: Raw data path (default: the model's public data set).
        beam_args: Extra `--beam-arg` flags (default: the pipeline's).
        overrides: Hyper-parameter overrides, passed as `--set key=json`.
        log_path: Where to keep the run's progress lines and logs.
        fresh: Delete `home` first, so that nothing is cached; else rerun
            in it, taking from ML Metadata's cache what it can.

    Returns:
        The run's JSON line plus `startup_seconds` (wall time outside every
        component), `outer_wall_seconds` and the load averages.
    """
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    args = [
        '-m', 'pipeline', 'run', '--model', model, '--profile', profile,
        '--home',
        str(home)
    ]
    if data:
        args += ['--data', data]
    args += [f'--beam-arg={arg}' for arg in beam_args]
    args += [f'--set={key}={json.dumps(value)}' for key, value in overrides]
    result = common.run_json(args, log_path=log_path)
    components = result.get('component_seconds', {})
    result['startup_seconds'] = round(
        result['wall_seconds'] - sum(components.values()), 1)
    result['home'] = str(home)
    return result
