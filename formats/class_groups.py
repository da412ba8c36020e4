"""The class -> group mapping file of multi-task data (`groups.json`).

A multi-task data set (models/multitask/) is an image set of classes plus a
JSON object mapping every class name to the name of a coarser group:

    {"T-shirt/top": "tops", "Trouser": "bottoms", "Pullover": "tops", ...}

It lives at the root of the data (`<data>/groups.json`, beside the class or
split folders, or the IDX files), or wherever `--set groups_file=` says.
Every class must have a group, every name must be a class of the data, and
there must be at least two groups; group labels index the sorted group
names. Fashion-MNIST in Debian's folder, which a user cannot write to, has
a built-in grouping (FASHION_MNIST_GROUPS) when no file is given.
"""

import dataclasses
import json
import os
from typing import Dict, Sequence, Tuple

from common import names
from formats.errors import InputDataError

# Fashion-MNIST's ten classes in five groups of clothing (issue 31).
FASHION_MNIST_GROUPS: Dict[str, str] = {
    'T-shirt/top': 'tops',
    'Pullover': 'tops',
    'Shirt': 'tops',
    'Coat': 'tops',
    'Trouser': 'bottoms',
    'Dress': 'dresses',
    'Sandal': 'footwear',
    'Sneaker': 'footwear',
    'Ankle boot': 'footwear',
    'Bag': 'bags',
}
BUILT_IN = '<built-in Fashion-MNIST grouping>'


@dataclasses.dataclass(frozen=True)
class ClassGroups:
    """The groups of a data set's classes.

    Attributes:
        path: The file read (or BUILT_IN).
        group_names: Sorted group names; a group label indexes them.
        class_groups: For each class label, its group label.
    """

    path: str
    group_names: Tuple[str, ...]
    class_groups: Tuple[int, ...]


def groups_path(groups_file: str, data_root: str) -> str:
    """The mapping file: `groups_file`, else `<data_root>/groups.json`."""
    return groups_file or os.path.join(data_root, names.GROUPS_FILE)


def read(groups_file: str, data_root: str,
         class_names: Sequence[str]) -> ClassGroups:
    """Reads and checks the mapping of `class_names` to groups.

    Args:
        groups_file: The mapping file, or '' for `<data_root>/groups.json`.
        data_root: The data's root folder.
        class_names: The data's class names in label order.

    Raises:
        InputDataError: naming the file and the fault: missing, unreadable,
            not a JSON object of names, a class without a group, a name that
            is no class, fewer than two groups.
    """
    path = groups_path(groups_file, data_root)
    if not groups_file and not os.path.exists(path) and (
            os.path.realpath(data_root) == names.FASHION_MNIST_DIR):
        mapping = FASHION_MNIST_GROUPS
        path = BUILT_IN
    else:
        mapping = _load(path)
    unknown = sorted(set(mapping) - set(class_names))
    if unknown:
        raise InputDataError(
            path, f'names classes the data does not have: '
            f'{", ".join(unknown)} (its classes: {", ".join(class_names)})')
    missing = [c for c in class_names if c not in mapping]
    if missing:
        raise InputDataError(
            path, f'gives no group for the classes {", ".join(missing)}: '
            'every class needs one')
    group_names = tuple(sorted(set(mapping.values())))
    if len(group_names) < 2:
        raise InputDataError(
            path, f'puts every class in one group ({group_names[0]}): a '
            'group head needs at least two groups')
    index = {group: i for i, group in enumerate(group_names)}
    return ClassGroups(path, group_names,
                       tuple(index[mapping[c]] for c in class_names))


def _load(path: str) -> Dict[str, str]:
    """The file's JSON object of class name -> group name."""
    if not os.path.isfile(path):
        raise InputDataError(
            path, 'no class -> group mapping file: write one (a JSON object '
            'of class name -> group name) or name it with --set groups_file=')
    try:
        with open(path, encoding='utf-8') as f:
            mapping = json.load(f)
    except UnicodeDecodeError as error:
        raise InputDataError(path, f'not UTF-8 text: {error}') from error
    except json.JSONDecodeError as error:
        raise InputDataError(path, f'not JSON: {error.msg}',
                             error.lineno) from error
    if not isinstance(mapping, dict) or not mapping:
        raise InputDataError(
            path, 'expected a JSON object of class name -> group name')
    bad = [
        c for c, g in mapping.items()
        if not isinstance(g, str) or not g.strip()
    ]
    if bad:
        raise InputDataError(
            path, f'the group of {bad[0]!r} is not a non-empty string')
    return mapping
