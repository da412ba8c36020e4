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
All signatures return `scores` (class probabilities, [batch, num_classes])
and `classes` (class names, [batch, num_classes], aligned with `scores`).

The embedding model (models/embedding/) adds two that answer otherwise,
both taking encoded image bytes as `serving_image` does:
- `serving_embedding`: `embeddings`, unit vectors [batch, dim];
- `serving_reference` (classify by reference): `nearest_class`, the name of
  the class of the nearest reference embedding [batch], and `similarity`,
  its cosine similarity [batch].
"""

DEFAULT_SIGNATURE = 'serving_default'
EXAMPLES_INPUT = 'inputs'

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

SCORES_OUTPUT = 'scores'
CLASSES_OUTPUT = 'classes'
