"""Every import runs downhill: a module imports only from its layer or below.

Layers, bottom up (a module's layer is that of its longest listed prefix):

    models -> serving (the server, client and process library)
    -> components -> pipeline -> command lines (pipeline and serving CLIs,
    bench)

so the serving library never reaches into the pipeline that uses it, and
models build and train with neither. Read from the source with `ast`: every
`import`, at module level or inside a function.
"""

import ast
import pathlib
from typing import Iterator, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

LAYERS = {
    'common': -2,
    'formats': -1,
    'models': 0,
    'serving': 1,
    'components': 2,
    'pipeline': 3,
    'pipeline.cli': 4,
    'pipeline.__main__': 4,
    'serving.cli': 4,
    'serving.__main__': 4,
    'bench': 4,
}
PACKAGES = ('common', 'formats', 'models', 'serving', 'components', 'pipeline',
            'bench')


def layer_of(module: str) -> int:
    """The layer of a dotted module name (its longest listed prefix)."""
    parts = module.split('.')
    for end in range(len(parts), 0, -1):
        prefix = '.'.join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def module_name(path: pathlib.Path) -> str:
    """`serving/cli.py` -> `serving.cli`; a package's __init__ -> the package.
    """
    parts = list(path.relative_to(REPO).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def project_imports(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    """(line, imported module) for every import of a project package."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or '']
        else:
            continue
        for name in names:
            if name.split('.')[0] in PACKAGES:
                yield node.lineno, name


def upward_imports():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob('*.py')):
            importer = module_name(path)
            for line, imported in project_imports(path):
                if layer_of(imported) > layer_of(importer):
                    found.append(f'{path.relative_to(REPO)}:{line} imports '
                                 f'{imported}')
    return found


def test_no_import_runs_up_a_layer():
    assert upward_imports() == []


@pytest.mark.parametrize('importer, imported, upward', [
    ('serving.client', 'components.example_gen', True),
    ('components.serving_check.request_builder', 'serving.client', False),
    ('models.training', 'pipeline.configs', True),
    ('serving.cli', 'formats.image_formats', False),
    ('formats.image_formats', 'models.features', True),
])
def test_layers_order_as_documented(importer, imported, upward):
    assert (layer_of(imported) > layer_of(importer)) == upward
