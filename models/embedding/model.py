"""Metric learning: the convnet's trunk, an L2-normalized embedding.

The trunk is the convnet's (models/convnet/model.py) up to its classifier:
its filter-bank blocks and dense layer. A dense layer of `embedding_dim`
units and an L2 normalization follow, so every embedding is a unit vector
and similarity is the cosine. Trained with a triplet loss whose triplets are
mined in each batch (models/embedding/losses.py), so classes never seen in
training can be told apart by their distance: at export, a table of
reference embeddings of the training classes goes into the SavedModel, and
a served model names an image's nearest known class
(models/embedding/references.py); `python -m pipeline add-class` adds a
class to the table without retraining.

The same tf.Transform output and model inputs as the convnet.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from common import names
from common import settings
from models import recipe as recipe_lib
from models import schedule
from models.convnet import model as convnet
from models.embedding import losses
from models.embedding import references

keras = tf.keras
EMBEDDING_LAYER = 'embedding'


def build_model(params: Dict[str, Any], num_classes: int) -> keras.Model:
    """The convnet's trunk with a unit-vector embedding as output."""
    del num_classes  # The output is an embedding, whatever the classes.
    # The convnet as a classifier, cut below its classifier layer: its
    # blocks are reused as they are, whatever they become.
    classifier = convnet.build_model(params, 1)
    trunk = classifier.get_layer('classifier').input
    x = keras.layers.Dense(int(params['embedding_dim']),
                           name='embedding_dense')(trunk)
    embedding = keras.layers.UnitNormalization(name=EMBEDDING_LAYER)(x)
    image = classifier.get_layer(names.IMAGE_KEY).output
    return keras.Model({names.IMAGE_KEY: image}, embedding, name='embedding')


def compile_model(
        model: keras.Model,
        params: Dict[str, Any],
        learning_rate: Optional[schedule.LearningRate] = None) -> None:
    """Adam on the triplet loss; accuracy is the in-batch 1-NN accuracy."""
    if learning_rate is None:
        learning_rate = settings.value(params, 'learning_rate')
    model.compile(optimizer=keras.optimizers.Adam(
        learning_rate=learning_rate,
        global_clipnorm=params.get('clip_norm') or None),
                  loss=losses.TripletLoss(float(params['triplet_margin']),
                                          params['triplet_mining']),
                  metrics=[losses.NearestNeighbourAccuracy()])


def export_model(model: keras.Model, tf_transform_output, class_names,
                 to_model_inputs, extra_signatures, export_dir: str,
                 params: Dict[str, Any], train_data: tf.data.Dataset) -> None:
    """Exports with a reference table of the training split's examples."""
    references.export_serving_model(model,
                                    tf_transform_output,
                                    class_names,
                                    to_model_inputs,
                                    extra_signatures,
                                    export_dir,
                                    reference_data=train_data,
                                    references_per_class=int(
                                        params['references_per_class']))


def search_space(hp) -> Dict[str, Any]:
    """The convnet's space, and the embedding's width and margin."""
    return {
        **convnet.search_space(hp), 'embedding_dim':
            hp.Choice('embedding_dim', [16, 32, 64]),
        'triplet_margin':
            hp.Choice('triplet_margin', [0.1, 0.2, 0.5])
    }


RECIPE = recipe_lib.ModelRecipe(name='embedding',
                                build_model=build_model,
                                to_model_inputs=convnet.to_model_inputs,
                                extra_signatures={},
                                search_space=search_space,
                                compile_model=compile_model,
                                export_model=export_model)
