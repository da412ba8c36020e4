"""Finding a SavedModel on disk, without loading TensorFlow.

A path names either a SavedModel directory (it holds `saved_model.pb`) or a
TF Serving model base path (numbered version folders, each a SavedModel),
of which the newest version is meant. The command line checks a path with
this before TensorFlow loads; the Trainer opens the same one.
"""

import os

SAVED_MODEL_FILE = 'saved_model.pb'
VARIABLES_INDEX = os.path.join('variables', 'variables.index')


class SavedModelDirError(ValueError):
    """A path that is no readable SavedModel: names the path and the fault."""

    def __init__(self, path: str, fault: str):
        self.path = path
        self.fault = fault
        super().__init__(f'{path}: {fault}')


def newest_saved_model(path: str) -> str:
    """The SavedModel directory `path` names.

    Itself, or the newest version of the model base path it is.

    Raises:
        SavedModelDirError: naming the path and what is wrong with it.
    """
    if not os.path.exists(path):
        raise SavedModelDirError(path, 'no such file or directory')
    if not os.path.isdir(path):
        raise SavedModelDirError(
            path, 'not a directory: expected a '
            'SavedModel or a model base path')
    saved_model = path
    if not os.path.exists(os.path.join(path, SAVED_MODEL_FILE)):
        versions = [
            int(name)
            for name in os.listdir(path)
            if name.isdigit() and os.path.isdir(os.path.join(path, name))
        ]
        if not versions:
            raise SavedModelDirError(
                path, f'no {SAVED_MODEL_FILE} and no numbered version '
                'folders: not a SavedModel or a model base path')
        saved_model = os.path.join(path, str(max(versions)))
    for name in (SAVED_MODEL_FILE, VARIABLES_INDEX):
        file_path = os.path.join(saved_model, name)
        try:
            with open(file_path, 'rb') as f:
                empty = not f.read(1)
        except OSError as error:
            raise SavedModelDirError(
                file_path, f'cannot read: {error.strerror}') from error
        if empty:
            raise SavedModelDirError(file_path, 'empty file')
    return saved_model
