"""The README's promise: `models/` imports neither TFX nor Beam, so a script
that only builds or trains a model pays TensorFlow's import alone."""

import subprocess
import sys

from tests.serving import server_utils

# Every module under models/, imported in a fresh interpreter; then the
# libraries that must not have come with them.
_PROBE = '''
import importlib, pkgutil, sys
import models
for module in pkgutil.walk_packages(models.__path__, 'models.'):
    importlib.import_module(module.name)
print(sorted(name for name in ('tfx', 'apache_beam') if name in sys.modules))
'''


def test_models_import_neither_tfx_nor_beam():
    process = subprocess.run([sys.executable, '-c', _PROBE],
                             cwd=str(server_utils.REPO_ROOT),
                             env=server_utils.server_env(),
                             capture_output=True,
                             text=True,
                             timeout=900,
                             check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.splitlines()[-1] == '[]', process.stdout
