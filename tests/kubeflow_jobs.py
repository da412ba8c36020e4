"""Kubeflow jobs compiled once per test session, as a user compiles them
(`python -m pipeline compile` in a folder of its own), shared by the tests
that read them (tests/test_kubeflow_compile.py, test_kubeflow_client.py)."""

import atexit
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = 'registry.example/pipeline:test'
PIPELINE_ROOT = 'gs://bucket/root'


@dataclasses.dataclass(frozen=True)
class CompiledJob:
    path: str  # The PipelineJob JSON.
    cwd: str  # The folder compile ran in.
    data: Optional[str]  # --data, if given.


def compile_command(cwd, *flags):
    """`python -m pipeline compile FLAGS` run in `cwd`."""
    return subprocess.run([sys.executable, '-m', 'pipeline', 'compile', *flags],
                          cwd=cwd,
                          env={
                              **os.environ, 'PYTHONPATH': REPO
                          },
                          capture_output=True,
                          text=True,
                          timeout=900,
                          check=False)


@functools.lru_cache(maxsize=None)
def compiled_job(model: str,
                 data: Optional[str] = None,
                 flags: Tuple[str, ...] = ()) -> CompiledJob:
    """The job of `model` for IMAGE and PIPELINE_ROOT, reading `data`,
    compiled with more `flags`."""
    cwd = tempfile.mkdtemp(prefix=f'compile_{model}_')
    # Cached for the test process's life, so removed when it ends.
    atexit.register(shutil.rmtree, cwd, ignore_errors=True)
    path = os.path.join(cwd, f'{model}.json')
    process = compile_command(cwd, '--model', model, '--target', 'kubeflow',
                              '--output', path, '--image', IMAGE,
                              '--pipeline-root', PIPELINE_ROOT,
                              *(['--data', data] if data else []), *flags)
    assert process.returncode == 0, process.stderr[-3000:]
    return CompiledJob(path=path, cwd=cwd, data=data)
