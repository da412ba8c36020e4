"""The cluster a strategy trains on, as TF_CONFIG describes it (no TensorFlow).

models/workers.py starts a local one; on a real cluster (a TFJob) the
operator sets TF_CONFIG, and `cluster_problem` says what it lacks before
anything heavy loads (the command line) or the strategy is made.
"""

import json
from typing import Optional

# The task types a parameter-server cluster needs (TF_CONFIG's names).
PARAMETER_SERVER_TASKS = ('chief', 'worker', 'ps')


def cluster_problem(strategy: str, tf_config: Optional[str]) -> Optional[str]:
    """What a cluster's TF_CONFIG lacks for `strategy`, or None.

    None too without TF_CONFIG (`launch` starts the cluster) and for the
    strategies that need no cluster's particular tasks.
    """
    if strategy != 'parameter_server' or not tf_config:
        return None
    try:
        cluster = json.loads(tf_config).get('cluster') or {}
    except (ValueError, AttributeError) as error:
        return f'TF_CONFIG: not JSON: {error}'
    needed = PARAMETER_SERVER_TASKS
    if not isinstance(cluster, dict) or not all(cluster.get(t) for t in needed):
        has = [
            t for t in needed if isinstance(cluster, dict) and cluster.get(t)
        ]
        return (
            'TF_CONFIG: strategy parameter_server needs a cluster with '
            f'chief, worker and ps tasks; it has {", ".join(has) or "none"}')
    return None
