"""Tracing tf_keras models without converting tf_keras's own code.

AutoGraph rewrites the Python of every function a `tf.function` trace calls,
except in the packages on its list of known libraries, which has `keras`
but not `tf_keras` (TF 2.16): so each trace of a train, eval or serving
function parsed and rewrote tf_keras's engine and layers (`Model.__call__`,
the functional graph walk, every layer's `call`). That code is Keras 2's,
which TensorFlow never converts, and runs as is. Measured on the convnet's
smoke run: the first training step took 65 s, of which 62 s were AutoGraph
(load average 5), and 3 s without; the same weights and accuracy after.

Our own code (input functions, serving signatures, any custom layer's
`call`) is still converted: it is not in tf_keras.
"""

# AutoGraph's rules are not public API; they have had this shape since
# TF 2.2 (`tensorflow/python/autograph/core/config.py`).
from tensorflow.python.autograph.core import config as _autograph_config
from tensorflow.python.autograph.core import config_lib as _config_lib


def skips_tf_keras(rule: _config_lib.Rule) -> bool:
    """Whether an AutoGraph conversion rule leaves `tf_keras` unconverted."""
    return (isinstance(rule, _autograph_config.DoNotConvert) and
            rule.matches('tf_keras'))


def skip_autograph_of_tf_keras() -> None:
    """Adds `tf_keras` to AutoGraph's libraries never converted (once)."""
    rules = _autograph_config.CONVERSION_RULES
    if any(skips_tf_keras(rule) for rule in rules):
        return
    _autograph_config.CONVERSION_RULES = (
        _autograph_config.DoNotConvert('tf_keras'),) + tuple(rules)
