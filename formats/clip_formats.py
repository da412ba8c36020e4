"""Readers for clip classification data: folders of clips in class folders.

Pure Python (numpy and Pillow, no TensorFlow), so the clip ExampleGen can
call these from Beam workers. Every fault raises `InputDataError` naming
the file and what is wrong.

The layout is the image class folders' (formats/image_formats.py):
`<root>/[train|test|eval|validation/]<class>/<clip>`, where a clip is
- a folder of frame images (PNG, JPEG, BMP, GIF), in the natural order of
  their names (`frame2.png` before `frame10.png`); gray frames give one
  channel, colour frames three (alpha and palettes become RGB); or
- a `.npy` file, or a `.npz` file holding one array: frames x height x
  width, or frames x height x width x channels, of numbers (any dtype but
  complex; no NaN or infinity).

A clip's values are kept as they are (0-255 for frame images); the
pipeline's Transform z-scores them per channel. Every clip of a data set
has the shape of its first training clip (in path order): a clip of
another shape is bad input, not resized or padded (cut or resize your
clips to one shape first; docs/clips.md).
"""

import dataclasses
import io
import os
import re
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from formats import image_formats
from formats.errors import InputDataError

ARRAY_EXTENSIONS: Tuple[str, ...] = ('.npy', '.npz')
# Pillow modes of gray frames; any other mode is read as RGB.
_GRAY_MODES = ('1', 'L', 'I', 'I;16', 'F')

Shape = Tuple[int, int, int, int]


def is_clip(path: str) -> bool:
    """Whether `path` is a clip: a folder (of frames) or a `.npy`/`.npz`."""
    return (os.path.isdir(path) or path.lower().endswith(ARRAY_EXTENSIONS)
           ) and not os.path.basename(path).startswith('.')


def _natural_key(name: str) -> List[object]:
    return [
        int(part) if part.isdigit() else part
        for part in re.split(r'(\d+)', name)
    ]


def frame_files(folder: str) -> List[str]:
    """A clip folder's frame images, in the natural order of their names."""
    try:
        names = [
            n for n in os.listdir(folder) if not n.startswith('.') and
            n.lower().endswith(image_formats.IMAGE_EXTENSIONS)
        ]
    except OSError as e:
        raise InputDataError(folder, f'cannot be listed: {e.strerror}') from e
    if not names:
        raise InputDataError(
            folder, 'is an empty clip: a clip folder needs frame images '
            f'({", ".join(image_formats.IMAGE_EXTENSIONS)})')
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _frame_channels(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _check_frame_sizes(frames: List[Tuple[str, Tuple[int, int, int]]]) -> None:
    first_path, first = frames[0]
    for path, shape in frames[1:]:
        if shape != first:
            raise InputDataError(
                path, f'is a frame of {_describe_frame(shape)} in a clip '
                f'whose first frame ({os.path.basename(first_path)}) is '
                f'{_describe_frame(first)}: the frames of a clip must share '
                'their size and channels')


def _describe_frame(shape: Tuple[int, int, int]) -> str:
    height, width, channels = shape
    return f'{height}x{width} with {channels} channel' + ('s' if channels > 1
                                                          else '')


def _open_frame(path: str) -> Image.Image:
    data = image_formats._read_bytes(path)  # pylint: disable=protected-access
    if not data:
        raise InputDataError(path, 'is an empty frame (0 bytes)')
    try:
        return Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError as e:
        raise InputDataError(
            path, 'is a frame Pillow cannot read: unknown format or damaged '
            f'header (it starts with {data[:8]!r})') from e


def _frames_shape(folder: str) -> Shape:
    """The shape of a clip folder from its frames' headers (no decoding)."""
    frames = []
    for path in frame_files(folder):
        with _open_frame(path) as image:
            frames.append((path, (image.height, image.width,
                                  _frame_channels(image.mode))))
    _check_frame_sizes(frames)
    return (len(frames), *frames[0][1])


def _read_frames(folder: str) -> np.ndarray:
    """A clip folder's frames, fully decoded: [frames, height, width, ch]."""
    frames, arrays = [], []
    for path in frame_files(folder):
        decoded = image_formats.decode_image_file(path)
        with Image.open(io.BytesIO(decoded)) as image:
            channels = _frame_channels(image.mode)
            image = image.convert('L' if channels == 1 else 'RGB')
            array = np.asarray(image, dtype=np.float32).reshape(
                image.height, image.width, channels)
        frames.append((path, array.shape))
        arrays.append(array)
    _check_frame_sizes(frames)
    return np.stack(arrays)


def _load_array(path: str, header_only: bool) -> np.ndarray:
    """The one array of a `.npy`/`.npz` file (memory-mapped: header only)."""
    try:
        if path.lower().endswith('.npz'):
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if len(keys) != 1:
                    raise InputDataError(
                        path, f'holds {len(keys)} arrays '
                        f'({", ".join(keys) or "none"}); a clip file holds '
                        'one')
                return archive[keys[0]]
        return np.load(path,
                       allow_pickle=False,
                       mmap_mode='r' if header_only else None)
    except InputDataError:
        raise
    except FileNotFoundError as e:
        raise InputDataError(path, 'does not exist') from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputDataError(
            path, f'is not a NumPy array file numpy can read ({e})') from e


def _array_shape(path: str, array: np.ndarray) -> Shape:
    if array.dtype.kind not in 'biuf':
        raise InputDataError(
            path, f'holds {array.dtype} values; a clip holds numbers '
            '(bool, integers or floats)')
    if array.ndim not in (3, 4):
        raise InputDataError(
            path, f'has {array.ndim} dimensions {tuple(array.shape)}; a clip '
            'is frames x height x width [x channels]')
    shape = tuple(int(d) for d in array.shape) + ((1,) if array.ndim == 3 else
                                                  ())
    if 0 in shape:
        raise InputDataError(
            path, f'is an empty clip: shape {"x".join(map(str, shape))} '
            '(frames x height x width x channels) has a 0')
    return shape  # type: ignore[return-value]


def clip_shape(path: str) -> Shape:
    """A clip's (frames, height, width, channels), from headers where it can.

    Frame images are opened, not decoded; `.npy` files are memory-mapped.
    What only decoding finds (a truncated frame, NaN values) is left to
    `read_clip`.

    Raises:
        InputDataError: naming the file and the fault.
    """
    if os.path.isdir(path):
        return _frames_shape(path)
    return _array_shape(path, _load_array(path, header_only=True))


def read_clip(path: str) -> np.ndarray:
    """A clip, fully read and checked: float32 [frames, height, width, ch].

    Raises:
        InputDataError: naming the file (a clip or one of its frames) and
            the fault: unreadable, empty, wrong rank or type, frames of
            different sizes, NaN or infinite values.
    """
    if os.path.isdir(path):
        return _read_frames(path)
    array = _load_array(path, header_only=False)
    shape = _array_shape(path, array)
    values = np.asarray(array, dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values.ravel()))[0])
        raise InputDataError(
            path, 'holds NaN or infinite values (the first at frame '
            f'{bad // int(np.prod(shape[1:]))}); a clip holds finite numbers')
    return values


def check_shape(path: str,
                shape: Shape,
                expected: Shape,
                first: Optional[str] = None) -> None:
    """Raises InputDataError if a clip's `shape` is not the data set's."""
    if tuple(shape) != tuple(expected):
        where = f' (the first training clip, {first})' if first else ''
        raise InputDataError(
            path, f'is a clip of {describe(shape)}, but the clips of this data '
            f'set are {describe(expected)}{where}: every clip must have one '
            'shape; cut or resize it first')


def describe(shape: Shape) -> str:
    """'10 frames of 32x32x1' for (10, 32, 32, 1)."""
    frames, height, width, channels = shape
    return f'{frames} frames of {height}x{width}x{channels}'


@dataclasses.dataclass(frozen=True)
class ClipDataset:
    """Clips found by `scan_clip_folders`, by split, with labels.

    Attributes:
        class_names: Sorted class folder names; a label is an index into it.
        files: Split name -> ((clip path, label), ...), sorted by path.
        shape: (frames, height, width, channels) of every clip.
    """

    class_names: Tuple[str, ...]
    files: Dict[str, Tuple[Tuple[str, int], ...]]
    shape: Shape


def _visible(folder: str) -> List[str]:
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith('.'))
    except OSError as e:
        raise InputDataError(folder, f'cannot be listed: {e.strerror}') from e


def _scan_split(folder: str) -> Dict[str, List[str]]:
    classes = [
        n for n in _visible(folder) if os.path.isdir(os.path.join(folder, n))
    ]
    if not classes:
        example = os.path.join(folder, 'wave', '1.npy')
        raise InputDataError(
            folder, 'has no class folders: put the clips of each class in '
            f'their own sub-folder, e.g. {example}')
    found = {}
    for name in classes:
        class_folder = os.path.join(folder, name)
        clips = [
            os.path.join(class_folder, n)
            for n in _visible(class_folder)
            if is_clip(os.path.join(class_folder, n))
        ]
        if not clips:
            raise InputDataError(
                class_folder, 'is a class folder with no clips (folders of '
                f'frames, or {" or ".join(ARRAY_EXTENSIONS)} files)')
        found[name] = clips
    return found


def scan_clip_folders(root: str) -> ClipDataset:
    """Lists the clips, labels and clip shape of a clip data set.

    Every clip's shape is read (from headers: `clip_shape`) and checked
    against the first training clip's.

    Raises:
        InputDataError: a missing root, no class folders, a class folder
            without clips, split folders mixed with others or without
            train/, a test or eval class missing from train, or any clip
            fault `clip_shape` finds (wrong rank, frames of different sizes,
            an unreadable frame header, an empty clip, another shape).
    """
    if not os.path.isdir(root):
        raise InputDataError(
            root,
            'is not a folder' if os.path.exists(root) else 'does not exist')
    subfolders = [
        n for n in _visible(root) if os.path.isdir(os.path.join(root, n))
    ]
    splits = [n for n in subfolders if n in image_formats.SPLIT_FOLDERS]
    if splits:
        others = sorted(set(subfolders) - set(splits))
        if others or 'train' not in splits:
            raise InputDataError(
                root, f'has split folders ({", ".join(splits)}) ' +
                (f'mixed with other folders ({", ".join(others)})'
                 if others else 'but no train/ folder') +
                ': use train/ and test/ (and eval/), or no split folders')
        split_names = image_formats.SPLIT_FOLDERS
        folders = {split_names[n]: os.path.join(root, n) for n in splits}
    else:
        folders = {'train': root}
    by_split = {split: _scan_split(f) for split, f in folders.items()}
    class_names = tuple(sorted(by_split['train']))
    label = {name: index for index, name in enumerate(class_names)}
    for split, classes in by_split.items():
        missing = sorted(set(classes) - set(class_names))
        if missing:
            raise InputDataError(
                folders[split], f'has class folders missing from '
                f'{folders["train"]}: {", ".join(missing)}; every class needs '
                'training clips')
    files = {
        split:
            tuple(
                sorted((path, label[name])
                       for name, paths in classes.items()
                       for path in paths))
        for split, classes in by_split.items()
    }
    first = files['train'][0][0]
    shape = clip_shape(first)
    for split_files in files.values():
        for path, _ in split_files:
            check_shape(path, clip_shape(path), shape, first)
    return ClipDataset(class_names, files, shape)
