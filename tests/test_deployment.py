"""The deployment's files agree: the image the Dockerfile builds (and what
goes into it), and the manifests under deploy/ and serving/deploy/ that run
it, with the image and volume claims they name."""

import os
import re
import shutil
import subprocess
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

from models import workers
from pipeline import configs
from pipeline import engines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_DIRS = ('deploy', os.path.join('serving', 'deploy'))
# The model server's image: TF Serving's own, never built here.
SERVING_IMAGE = re.compile(r'^tensorflow/serving:\d+\.\d+\.\d+$')
KUSTOMIZATION = 'kustomization.yaml'
# The engines' own images beside the project's worker pools (deploy/flink,
# deploy/spark), at the versions `make engines` runs here.
ENGINE_IMAGES = {
    f'flink:{engines.FLINK_VERSION}-java17',
    f'apache/spark:{engines.SPARK_VERSION}-scala2.12-java17-ubuntu',
    'apache/beam_flink{}_job_server:{}'.format(
        engines.FLINK_VERSION.rsplit('.', 1)[0],
        engines.BEAM_JOB_SERVER_VERSION),
    f'apache/beam_spark3_job_server:{engines.BEAM_JOB_SERVER_VERSION}',
    # deploy/spark's init container: the Guava its executors put first.
    'maven:3.9-eclipse-temurin-17',
}


def _read(path: str) -> str:
    with open(os.path.join(REPO, path), encoding='utf-8') as f:
        return f.read()


def manifest_files() -> List[str]:
    """Every YAML file under the manifest folders, relative to REPO."""
    found = []
    for top in MANIFEST_DIRS:
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            found.extend(
                os.path.relpath(os.path.join(folder, name), REPO)
                for name in names
                if name.endswith(('.yaml', '.yml')))
    return sorted(found)


def documents(path: str) -> List[Dict[str, Any]]:
    """The file's YAML documents (a file may hold several)."""
    return [d for d in yaml.safe_load_all(_read(path)) if d is not None]


def walk(node: Any) -> Iterator[Tuple[str, Any]]:
    """(key, value) of every mapping entry in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def images(document: Dict[str, Any]) -> List[str]:
    """The images of a document's containers (any kind, CRDs too) and of a
    compose file's services."""
    found = [
        container['image'] for key, value in walk(document)
        if key in ('containers', 'initContainers') for container in value
    ]
    found.extend(
        service['image'] for service in document.get('services', {}).values())
    return found


def claims(document: Dict[str, Any]) -> List[str]:
    """The PersistentVolumeClaims a document's volumes mount."""
    return [
        value['claimName']
        for key, value in walk(document)
        if key == 'persistentVolumeClaim'
    ]


def kustomizations() -> List[str]:
    return [p for p in manifest_files() if os.path.basename(p) == KUSTOMIZATION]


def test_every_manifest_parses_and_every_resource_is_in_a_kustomization():
    files = manifest_files()
    assert files, MANIFEST_DIRS
    listed = set()
    for kustomization in kustomizations():
        folder = os.path.dirname(kustomization)
        for resource in documents(kustomization)[0]['resources']:
            path = os.path.normpath(os.path.join(folder, resource))
            assert os.path.exists(os.path.join(REPO,
                                               path)), (kustomization, resource)
            listed.add(path)
    for path in files:
        docs = documents(path)
        assert docs, path
        if 'kind' in docs[0] and os.path.basename(path) != KUSTOMIZATION:
            # A Kubernetes object: `kubectl apply -k` must reach it.
            assert path in listed, f'{path} is in no kustomization'


def test_every_image_is_the_projects_or_tf_serving():
    """The pipeline's manifests run the image `make image` builds (its
    repository; the kustomization sets the tag), beside the engines' pinned
    images; the server's run TF Serving's own."""
    seen = {}
    for path in manifest_files():
        for document in documents(path):
            for image in images(document):
                seen[image] = path
    assert seen
    for image, path in seen.items():
        repository = image.rsplit(':', 1)[0] if ':' in image else image
        if path.startswith('serving'):
            assert SERVING_IMAGE.match(image), (path, image)
        elif image not in ENGINE_IMAGES:
            assert repository == configs.IMAGE_REPOSITORY, (path, image)
    # Each kustomization of the project's image retags that repository.
    deploys = [k for k in kustomizations() if k.startswith('deploy')]
    # The Trainer (multi_worker, parameter_server), Flink and Spark.
    assert len(deploys) == 4, deploys
    for deploy in deploys:
        [entry] = documents(deploy)[0]['images']
        assert entry['name'] == configs.IMAGE_REPOSITORY
        assert entry['newName'].endswith(configs.IMAGE_REPOSITORY)


# TFJob replica types by TF_CONFIG's task types.
_REPLICA_TYPES = {'chief': 'Chief', 'worker': 'Worker', 'ps': 'PS'}


@pytest.mark.parametrize('path, strategy', [
    ('deploy/trainer-tfjob.yaml', 'multi_worker'),
    ('deploy/parameter-server/trainer-ps-tfjob.yaml', 'parameter_server'),
])
def test_each_tfjob_is_the_cluster_its_strategy_starts_locally(path, strategy):
    """The TFJob's replicas are the cluster `launch` starts at the settings'
    defaults (models/workers.py cluster_shape), each pod running the task
    entry point; only workers restart (the parameter-server coordinator
    gives a restarted worker steps again; a multi-worker ring cannot)."""
    [job] = documents(path)
    assert job['kind'] == 'TFJob'
    replicas = job['spec']['tfReplicaSpecs']
    shape = workers.cluster_shape({'strategy': strategy})
    assert {
        kind: spec['replicas'] for kind, spec in replicas.items()
    } == {
        _REPLICA_TYPES[t]: count for t, count in shape.items()
    }
    for kind, spec in replicas.items():
        [container] = spec['template']['spec']['containers']
        assert container['command'][:3] == ['python', '-m', 'models.workers']
        restarts = kind == 'Worker' and strategy == 'parameter_server'
        assert spec['restartPolicy'] == ('OnFailure' if restarts else 'Never')


def resources(kustomization: str) -> List[Dict[str, Any]]:
    """The documents of a kustomization's resources."""
    folder = os.path.dirname(kustomization)
    return [
        d for r in documents(kustomization)[0]['resources']
        for d in documents(os.path.join(folder, r))
    ]


def test_every_mounted_claim_is_defined_beside_it():
    """Each claim a kustomization's resources mount is a
    PersistentVolumeClaim of a kustomization of the same folder tree
    (deploy/flink and deploy/spark run on deploy's artifacts volume)."""
    for top in MANIFEST_DIRS:
        tree = [k for k in kustomizations() if k.startswith(top + os.sep)]
        defined = {
            d['metadata']['name']
            for k in tree
            for d in resources(k)
            if d.get('kind') == 'PersistentVolumeClaim'
        }
        for kustomization in tree:
            mounted = {c for d in resources(kustomization) for c in claims(d)}
            assert mounted, kustomization
            assert mounted <= defined, (kustomization, mounted - defined)


@pytest.mark.skipif(shutil.which('kubectl') is None,
                    reason='kubectl is not installed (Debian and PyPI have '
                    'none; Google Cloud SDK\'s apt repository has it)')
@pytest.mark.parametrize('folder',
                         MANIFEST_DIRS + ('deploy/flink', 'deploy/spark'))
def test_kustomizations_render_with_the_images_and_claims(folder):
    """`kubectl kustomize` renders each folder (what `kubectl apply -k`
    sends), the image retagged and the claims defined."""
    rendered = subprocess.run(
        ['kubectl', 'kustomize',
         os.path.join(REPO, folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    rendered_images = {i for d in docs for i in images(d)}
    defined = {
        d['metadata']['name']
        for d in docs
        if d['kind'] == 'PersistentVolumeClaim'
    }
    if folder == 'deploy':
        assert {c for d in docs for c in claims(d)} <= defined
    if folder.startswith('deploy'):
        [entry] = documents(os.path.join(folder, KUSTOMIZATION))[0]['images']
        assert rendered_images - ENGINE_IMAGES == {
            f'{entry["newName"]}:{entry["newTag"]}'
        }
    else:
        assert all(SERVING_IMAGE.match(i) for i in rendered_images)


def dockerfile_instructions() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuations joined."""
    text = re.sub(r'\\\n', ' ', _read('Dockerfile'))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith('#')]


def test_the_build_context_is_what_the_dockerfile_copies():
    """.dockerignore leaves out everything (the 3 GB .venv, tfx_home, .git,
    bench/results) but the files the Dockerfile copies."""
    patterns = [
        line.strip()
        for line in _read('.dockerignore').splitlines()
        if line.strip() and not line.startswith('#')
    ]
    assert patterns[0] == '*'
    kept = {p[1:].rstrip('/') for p in patterns if p.startswith('!')}
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == 'COPY':
            copied.update(p.rstrip('/') for p in arguments.split()[:-1])
    assert copied == kept
    # Every package but the tests' and the benchmarks' is in the image, so
    # a component's executor or a dotted run_fn path imports there.
    packages = {
        name for name in os.listdir(REPO)
        if os.path.isfile(os.path.join(REPO, name, '__init__.py'))
    }
    assert packages - {'tests', 'bench'} <= copied
    assert {'common', 'pipeline', 'requirements.txt'} <= copied


def test_the_image_runs_the_pipeline_command_line_on_python_3_10():
    instructions = dockerfile_instructions()
    assert ('ENTRYPOINT', '["python", "-m", "pipeline"]') in instructions
    # Real registries build from the official image; tools/image/build.sh
    # substitutes its local stand-in (tools/image/base.sh) by this argument.
    assert instructions[:2] == [('ARG', 'BASE_IMAGE=python:3.10-slim-bookworm'),
                                ('FROM', '${BASE_IMAGE}')]
    assert ('tools/image/build.sh $(IMAGE)' in _read('Makefile'))
