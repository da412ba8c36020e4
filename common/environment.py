"""The environment TensorFlow must see before it loads, in one place.

TFX 1.16 and TF 2.16 build and save models with Keras 2 (the `tf_keras`
package): `TF_USE_LEGACY_KERAS=1` makes `tf.keras` that Keras. It must be
set before TensorFlow is first imported, so each entry point calls
`use_legacy_keras()` before its TensorFlow imports, and each child process
is started with `LEGACY_KERAS_ENV` (the Makefile and the image set it too).
"""

import os

LEGACY_KERAS_ENV = {'TF_USE_LEGACY_KERAS': '1'}


def use_legacy_keras() -> None:
    """Makes `tf.keras` Keras 2, unless the environment says otherwise."""
    for name, value in LEGACY_KERAS_ENV.items():
        os.environ.setdefault(name, value)
