"""Names of the serving signatures, their inputs and outputs: one place for all.

Every model this project exports has the same serving contract, so the
exporter, the model server's checks, the client and the tests read these
names from here. This module imports nothing heavy (no TensorFlow).

- `serving_default` takes serialized tf.Example protos under the input
  name `inputs`. That is the convention TFMA and TF Serving's Classify API
  use; the outputs `classes` and `scores` are what Classify reads.
- Image models add `serving_image`: encoded image bytes (PNG, JPEG, ...).
- Sequence models add `serving_sequence`: a float tensor of padded
  sequences [batch, time, channels] and their lengths [batch].
- Clip models add `serving_clip`: a float tensor of clips
  [batch, frames, height, width, channels], of the data set's clip shape,
  values as the clips' files hold them (0-255 for frame images).
All signatures return `scores` (class probabilities, [batch, num_classes])
and `classes` (class names, [batch, num_classes], aligned with `scores`).

The embedding model (models/embedding/) adds two that answer otherwise,
both taking encoded image bytes as `serving_image` does:
- `serving_embedding`: `embeddings`, unit vectors [batch, dim];
- `serving_reference` (classify by reference): `nearest_class`, the name of
  the class of the nearest reference embedding [batch], and `similarity`,
  its cosine similarity [batch].

The multi-task model (models/multitask/) has a head per task, `class` (the
class folders) and `group` (their coarser groups). Its `serving_default`
answers with the primary head's `scores` and `classes` only (the Classify
API takes no more than these two outputs); `predict` takes what
`serving_default` takes and answers with those two and, for each task,
`<task>_scores` and `<task>_classes` (`task_output`); so does
`serving_image`. (TF Estimator's multi-head models had the same two.)
"""

DEFAULT_SIGNATURE = 'serving_default'
EXAMPLES_INPUT = 'inputs'
# Every head of a multi-task model, from serialized tf.Examples as above.
PREDICT_SIGNATURE = 'predict'

IMAGE_SIGNATURE = 'serving_image'
IMAGE_INPUT = 'images'

SEQUENCE_SIGNATURE = 'serving_sequence'
SEQUENCE_INPUT = 'sequences'
LENGTH_INPUT = 'lengths'

EMBEDDING_SIGNATURE = 'serving_embedding'
EMBEDDINGS_OUTPUT = 'embeddings'

REFERENCE_SIGNATURE = 'serving_reference'
NEAREST_CLASS_OUTPUT = 'nearest_class'
SIMILARITY_OUTPUT = 'similarity'

CLIP_SIGNATURE = 'serving_clip'
CLIP_INPUT = 'clips'

SCORES_OUTPUT = 'scores'
CLASSES_OUTPUT = 'classes'

# The multi-task model's tasks: the classes, and their coarser groups.
CLASS_TASK = 'class'
GROUP_TASK = 'group'
TASKS = (CLASS_TASK, GROUP_TASK)


def task_output(task: str, output: str) -> str:
    """The name of one task's output: `group_scores`, `class_classes`, ..."""
    return f'{task}_{output}'
