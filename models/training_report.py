"""What a training did: the report the Trainer writes as training.json.

models/training.py `train` fills one `TrainingReport` from its steps; the
Trainer (models/trainer.py) writes `as_json()` to its model run directory
(`names.TRAINING_REPORT`), where the pipeline's JSON line
(pipeline/summary.py), the run's report page (pipeline/report.py) and the
benchmarks read it. A worker process (models/workers.py) hands its report
to the Trainer as the same JSON.

No TensorFlow here: the Trainer's worker launcher reads reports too.
"""

import dataclasses
from typing import Any, Dict, List, Optional

# Fields written only where they apply: a Tuner's family, a distributing
# strategy's input shards, a transfer, an export, worker processes,
# parameter servers, an ensemble.
_WRITTEN_WHEN_SET = frozenset({
    'family', 'input_shards', 'transfer', 'export_dir', 'weights_sha256',
    'worker_weights_sha256', 'worker_export_dirs', 'parameter_servers',
    'workers_lost', 'ensemble'
})


@dataclasses.dataclass(kw_only=True)
class TrainingReport:
    """What a training did: its plan, schedule, epochs and export.

    The fields in the order training.json lists them.
    """
    # The plan: strategy, cluster, batches, learning rate, data and cache.
    strategy: str
    replicas: int
    workers: int
    per_replica_batch: int
    global_batch: int
    # The rate trained at after a warm-up (scaled by the replicas).
    learning_rate: float
    warmup_steps: int
    steps_per_epoch: int
    train_examples: int
    # cache_plan's: split -> kept in memory, the budget, the bytes needed.
    cached_splits: Dict[str, bool]
    cache_budget_bytes: int
    split_bytes_in_memory: Dict[str, int]
    # The family a Tuner chose (names.FAMILY).
    family: Optional[str] = None
    # Each input pipeline's [shard, shards] (distributing strategies).
    input_shards: Optional[List[List[int]]] = None
    # What was transferred (models/transfer.py `Transfer.report`).
    transfer: Optional[Dict[str, Any]] = None
    eval_examples: int
    # Whether the eval split was trained on too (train_on_small_eval):
    # train_examples then counts it.
    trained_on_eval: bool
    # The metric the kept epoch is chosen by (schedule.best_epoch_monitor).
    best_epoch_by: str
    # The schedule fitted to the data's size (schedule.training_schedule).
    epochs: int
    batch_norm_momentum: float
    early_stopping_patience: int
    lr_plateau_patience: int
    fitted_patience: int
    lr_plateau: bool
    learning_rate_decay: str
    jit_compile: bool
    steps_per_execution: int
    # The fit: whether this process is the chief, the epochs' results.
    chief: bool
    # The eval accuracy of the epoch whose weights are kept.
    best_val_accuracy: float
    steps: int
    epoch_seconds: List[float]
    val_accuracy: List[float]
    kept_epoch: int
    # Why it stopped: schedule.STOP_REASONS.
    stop_reason: str
    # The rate each epoch trained at (lr_plateau).
    epoch_learning_rates: List[float]
    # Every metric by epoch: the run's report draws them.
    history: Dict[str, List[float]]
    # The export: where the model went, a digest of its weights.
    export_dir: Optional[str] = None
    weights_sha256: Optional[str] = None
    # Every worker's, when worker processes trained (models/workers.py).
    worker_weights_sha256: Optional[List[str]] = None
    worker_export_dirs: Optional[List[str]] = None
    # With parameter servers: how many, and the workers that died while the
    # chief trained (their steps went to the others; models/workers.py).
    parameter_servers: Optional[int] = None
    workers_lost: Optional[List[int]] = None
    # An ensemble's networks, each as models/ensemble.py `network_report`
    # gives it; the fields above are then its first network's.
    ensemble: Optional[List[Dict[str, Any]]] = None

    def as_json(self) -> Dict[str, Any]:
        """The report as training.json holds it."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if (field.name not in _WRITTEN_WHEN_SET or
                getattr(self, field.name) is not None)
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> 'TrainingReport':
        """The report `as_json` wrote."""
        return cls(**data)
