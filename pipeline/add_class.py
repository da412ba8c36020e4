"""`python -m pipeline add-class`: a new class, without retraining.

`python -m pipeline add-class`: a new class for a served embedding model, from
reference images, without retraining.

The newest version under a model base path (as the Pusher writes it) is
loaded, the images are embedded by its own `serving_embedding` signature,
and a copy of it whose reference table (models/embedding/references.py)
holds the new class as well is written as the next version number, through
a hidden staging folder and a rename, as the Pusher does. The weights and
the signatures are the old version's; the old version is left as it was. A
model server polling the base path (ours in serving/, or TF Serving) then
serves the new version.

A retrained model's next push has the classes of its training data only:
add the class to it again.
"""

import os
import shutil
from typing import List, Sequence, Tuple

from components.pusher import executor as pusher_executor
from formats import image_formats
from formats.errors import InputDataError

# Images embedded per call of the signature.
_BATCH = 64
# The warmup requests the serving check wrote; valid for the new version,
# whose signatures are the same.
_ASSETS_EXTRA = 'assets.extra'


def newest_version(model_dir: str) -> Tuple[str, int]:
    """(path, number) of the newest version under a model base path.

    Raises:
        InputDataError: `model_dir` is not a folder or holds no version.
    """
    if not os.path.isdir(model_dir):
        raise InputDataError(
            model_dir, 'is not a folder (expected a model '
            'base path, e.g. tfx_home/serving/embedding)')
    newest = pusher_executor.newest_version(model_dir)
    if newest is None:
        raise InputDataError(
            model_dir, 'holds no numbered model version '
            '(expected a model base path the Pusher wrote)')
    return newest, int(os.path.basename(newest))


def read_images(folder: str) -> List[Tuple[str, bytes]]:
    """Every image file in `folder`, checked, with its bytes.

    (path, encoded bytes) of every image file in `folder`, sorted, each decoded
    fully once to check it.

    Raises:
        InputDataError: naming the folder (missing, empty) or the first
            file that is not a readable image.
    """
    try:
        names = sorted(
            name for name in os.listdir(folder) if not name.startswith('.'))
    except OSError as error:
        raise InputDataError(folder,
                             f'cannot be listed: {error.strerror}') from error
    paths = [
        os.path.join(folder, name)
        for name in names
        if os.path.isfile(os.path.join(folder, name))
    ]
    if not paths:
        raise InputDataError(folder, 'holds no image files')
    images = []
    for path in paths:
        if not path.lower().endswith(image_formats.IMAGE_EXTENSIONS):
            raise InputDataError(
                path, 'is not an image file (expected one of '
                f'{", ".join(image_formats.IMAGE_EXTENSIONS)})')
        images.append((path, image_formats.decode_image_file(path)))
    return images


def add_class(model_dir: str, name: str, images_dir: str) -> str:
    """Writes a new version of `model_dir` with class `name` added.

    Writes the newest version of `model_dir` with class `name` added, from the
    images in `images_dir`, as the next version.

    Returns:
        The new version's folder.

    Raises:
        InputDataError: naming the file or folder at fault: no version, not
            an embedding model, no or unreadable images, a name the model
            already has.
    """
    name = name.strip()
    version_dir, version = newest_version(model_dir)
    if not name:
        raise InputDataError(version_dir, 'the new class needs a name')
    images = read_images(images_dir)
    # TensorFlow loads after the cheap checks.
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from common import signatures  # pylint: disable=import-outside-toplevel

    model = tf.saved_model.load(version_dir)
    table = getattr(model, 'reference_table', None)
    embed = model.signatures.get(signatures.EMBEDDING_SIGNATURE)
    if table is None or embed is None:
        raise InputDataError(
            version_dir, 'is not an embedding model (no reference table or '
            f'{signatures.EMBEDDING_SIGNATURE} signature); train one with '
            '--model embedding')
    class_names = [c.decode() for c in table.class_names.numpy()]
    if name in class_names:
        raise InputDataError(
            version_dir, f'already has a class {name!r} (classes: '
            f'{", ".join(class_names)}); choose another name')
    vectors = np.concatenate([
        embed(images=tf.constant([data
                                  for _, data in images[i:i + _BATCH]]))[
                                      signatures.EMBEDDINGS_OUTPUT].numpy()
        for i in range(0, len(images), _BATCH)
    ])
    table.embeddings.assign(np.concatenate([table.embeddings.numpy(), vectors]))
    table.labels.assign(
        np.concatenate([
            table.labels.numpy(),
            np.full(len(vectors), len(class_names), np.int32)
        ]))
    table.class_names.assign(class_names + [name])
    return _write_version(model, model_dir, version_dir, version + 1)


def _write_version(model, model_dir: str, old_dir: str, version: int) -> str:
    """Saves `model` as `<model_dir>/<version>` through a staging folder."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    staging = os.path.join(model_dir, pusher_executor.STAGING_DIR, str(version))
    shutil.rmtree(staging, ignore_errors=True)
    tf.saved_model.save(model, staging, signatures=dict(model.signatures))
    if os.path.isdir(os.path.join(old_dir, _ASSETS_EXTRA)):
        shutil.copytree(os.path.join(old_dir, _ASSETS_EXTRA),
                        os.path.join(staging, _ASSETS_EXTRA))
    final = os.path.join(model_dir, str(version))
    os.rename(staging, final)
    shutil.rmtree(os.path.dirname(staging), ignore_errors=True)
    return final


def class_counts(version_dir: str) -> Sequence[Tuple[str, int]]:
    """(class name, references) of an embedding model's table."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    table = tf.saved_model.load(version_dir).reference_table
    counts = np.bincount(table.labels.numpy(),
                         minlength=int(tf.size(table.class_names)))
    return [
        (c.decode(), int(n)) for c, n in zip(table.class_names.numpy(), counts)
    ]
