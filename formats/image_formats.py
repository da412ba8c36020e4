"""Readers for image classification data: IDX files and folders of images.

Pure Python (numpy and Pillow, no TensorFlow), so the image ExampleGen can call
these from Beam workers. Every fault in the input data raises `InputDataError`
naming the file and what is wrong.

- IDX files, the format of MNIST and Fashion-MNIST: `read_idx` reads one,
  `labels_path_for` finds the labels beside the images, `read_idx_dataset`
  reads and checks both, and `encode_png` turns each image into PNG bytes.
- Folders of images in the layout Keras' `image_dataset_from_directory`
  reads (root/<class>/<images>, optionally under train/ and test/):
  `scan_class_folders` lists the files and labels, and `decode_image_file`
  checks each file and returns its PNG or JPEG bytes.
"""

import dataclasses
import gzip
import io
import math
import os
import re
import struct
import zlib
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from formats.errors import InputDataError

FASHION_MNIST_CLASS_NAMES: Tuple[str,
                                 ...] = ('T-shirt/top', 'Trouser', 'Pullover',
                                         'Dress', 'Coat', 'Sandal', 'Shirt',
                                         'Sneaker', 'Bag', 'Ankle boot')

# The formats image_dataset_from_directory accepts; matched case-insensitively.
IMAGE_EXTENSIONS: Tuple[str, ...] = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')

_GZIP_MAGIC = b'\x1f\x8b'

# IDX type code -> (name in the IDX spec, numpy dtype as stored: big-endian).
_IDX_TYPES = {
    0x08: ('ubyte', np.dtype('u1')),
    0x09: ('byte', np.dtype('i1')),
    0x0B: ('short', np.dtype('>i2')),
    0x0C: ('int', np.dtype('>i4')),
    0x0D: ('float', np.dtype('>f4')),
    0x0E: ('double', np.dtype('>f8')),
}

# 'train-images-idx3-ubyte.gz' and Kaggle's 'train-images.idx3-ubyte'.
_IDX_IMAGES_NAME = re.compile(
    r'^(?P<stem>.*)-images(?P<sep>[-.])idx\d-ubyte(?P<gz>\.gz)?$')

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> gray, RGB, RGBA
# Pillow modes PNG stores as they are; other modes are converted first.
_PNG_MODES = ('1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'I;16')

# Split folder name -> split name.
SPLIT_FOLDERS = {
    'train': 'train',
    'test': 'test',
    'eval': 'eval',
    'validation': 'eval'
}


def _read_bytes(path: str) -> bytes:
    """Returns a file's contents, or raises InputDataError if unreadable."""
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError as e:
        raise InputDataError(path, 'does not exist') from e
    except IsADirectoryError as e:
        raise InputDataError(path, 'is a folder, not a file') from e
    except OSError as e:
        raise InputDataError(path, f'cannot be read: {e.strerror}') from e


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (http://yann.lecun.com/exdb/mnist/), gzipped or not.

    The header is two zero bytes, a type code, the number of dimensions, and
    each dimension as a big-endian int32; the values follow, big-endian.
    Compression is detected from the gzip magic bytes, not the file name.

    Args:
        path: The IDX file.

    Returns:
        A writable array in native byte order with the file's shape and type:
        uint8, int8, int16, int32, float32 or float64.

    Raises:
        InputDataError: If the file is missing, empty, not IDX, of an unknown
            type code, truncated, followed by extra bytes, or corrupt gzip.
    """
    data = _read_bytes(path)
    compressed = data[:2] == _GZIP_MAGIC
    if compressed:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InputDataError(
                path, f'is gzip-compressed but cannot be decompressed ({e}): '
                'the file is damaged or incomplete; download it again') from e
    if not data:
        raise InputDataError(path, 'is empty')
    if len(data) < 4:
        raise InputDataError(
            path, f'is too short to be an IDX file: {len(data)} bytes, but '
            'the header alone needs at least 4')
    if data[:2] != b'\0\0':
        raise InputDataError(
            path, 'is not an IDX file: it starts with bytes '
            f'{data[:4].hex(" ")}, but IDX files start with '
            '00 00 <type code> <number of dimensions>')
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        known = ', '.join(
            f'0x{code:02X} ({name})' for code, (name, _) in _IDX_TYPES.items())
        raise InputDataError(
            path, f'has unknown IDX type code 0x{type_code:02X}; '
            f'known codes are {known}')
    type_name, dtype = _IDX_TYPES[type_code]
    if ndim == 0:
        raise InputDataError(
            path, 'has 0 dimensions in its IDX header; it needs at least 1')
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise InputDataError(
            path, f'has a truncated IDX header: {ndim} dimensions need '
            f'{header_size} header bytes, the file has {len(data)}')
    shape = struct.unpack(f'>{ndim}I', data[4:header_size])
    count = math.prod(shape)
    expected, found = count * dtype.itemsize, len(data) - header_size
    described = (f'{"x".join(map(str, shape))} {type_name} values '
                 f'({expected} bytes' +
                 (' after decompression)' if compressed else ')'))
    if found < expected:
        raise InputDataError(
            path, f'is truncated: its header promises {described} but only '
            f'{found} bytes follow the header; download it again')
    if found > expected:
        raise InputDataError(
            path, f'has {found - expected} unexpected bytes after the data: '
            f'its header promises {described} but {found} bytes follow; '
            'the file is damaged or its header is wrong')
    values = np.frombuffer(data, dtype, count=count, offset=header_size)
    return values.reshape(shape).astype(dtype.newbyteorder('='))


def labels_path_for(images_path: str) -> str:
    """Returns the labels file beside an IDX images file.

    'train-images-idx3-ubyte.gz' -> 'train-labels-idx1-ubyte.gz', with or
    without '.gz', any prefix ('t10k', ...), and Kaggle's
    'train-images.idx3-ubyte' naming. If only the labels file with the other
    compression exists (one file was gunzipped), that one is returned.

    Args:
        images_path: The IDX images file.

    Returns:
        The path of the labels file, which exists.

    Raises:
        InputDataError: If the name does not follow the MNIST naming, or the
            labels file does not exist.
    """
    folder, name = os.path.split(images_path)
    match = _IDX_IMAGES_NAME.match(name)
    if not match:
        raise InputDataError(
            images_path, 'has a name that does not tell where its labels are: '
            "expected a name like 'train-images-idx3-ubyte.gz', whose labels "
            "are 'train-labels-idx1-ubyte.gz'")
    stem = f'{match["stem"]}-labels{match["sep"]}idx1-ubyte'
    preferred, other = ('.gz', '') if match['gz'] else ('', '.gz')
    for suffix in (preferred, other):
        path = os.path.join(folder, stem + suffix)
        if os.path.isfile(path):
            return path
    raise InputDataError(
        os.path.join(folder, stem + preferred),
        f'does not exist; it should hold the labels for {images_path}')


def read_idx_dataset(images_path: str, labels_path: str,
                     num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Reads IDX images and their labels, and checks they belong together.

    Args:
        images_path: IDX file of unsigned bytes, shaped [N, H, W] or
            [N, H, W, C] with C 1, 3 or 4.
        labels_path: IDX file of N integer labels.
        num_classes: Labels must be in [0, num_classes).

    Returns:
        (images, labels): images uint8 [N, H, W] or [N, H, W, C], labels int64
        [N].

    Raises:
        InputDataError: If either file is unreadable (see `read_idx`), the
            images are not unsigned bytes or not 3-d/4-d, the labels are not
            1-d integers, the counts differ, or a label is out of range.
        ValueError: If num_classes is less than 1.
    """
    if num_classes < 1:
        raise ValueError(f'num_classes must be at least 1, got {num_classes}')
    images = read_idx(images_path)
    if images.dtype != np.uint8:
        raise InputDataError(
            images_path, f'holds {images.dtype} values; images must be '
            'unsigned bytes (IDX type code 0x08)')
    if images.ndim not in (3, 4):
        raise InputDataError(
            images_path, f'has {images.ndim} dimensions {images.shape}; '
            'images must be [count, height, width] or '
            '[count, height, width, channels]')
    if images.ndim == 4 and images.shape[3] not in _PNG_COLOR_TYPES:
        raise InputDataError(
            images_path, f'has {images.shape[3]} channels; images must have '
            '1 (gray), 3 (RGB) or 4 (RGBA)')
    if 0 in images.shape[1:3]:
        raise InputDataError(
            images_path, f'has images of {images.shape[1]}x{images.shape[2]} '
            'pixels; they must be at least 1x1')
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype.kind not in 'iu':
        raise InputDataError(
            labels_path, f'holds {labels.dtype} values shaped {labels.shape}; '
            'labels must be 1-d integers [count]')
    if len(labels) != len(images):
        raise InputDataError(
            labels_path, f'has {len(labels)} labels but {images_path} has '
            f'{len(images)} images; each image needs exactly one label')
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = bad[0]
        raise InputDataError(
            labels_path, f'has label {labels[first]} at index {first}, '
            f'outside [0, {num_classes}); {bad.size} of {len(labels)} labels '
            'are out of range: check num_classes or the labels file')
    return images, labels


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Returns a PNG chunk: length, type, payload, CRC of type and payload."""
    return (struct.pack('>I', len(payload)) + kind + payload +
            struct.pack('>I', zlib.crc32(kind + payload)))


def encode_png(image: np.ndarray) -> bytes:
    """Encodes an 8-bit image as PNG.

    Writes the PNG directly with zlib: 8 bits per sample, no row filters, one
    IDAT chunk. On 28x28 images this is about twice as fast as Pillow's encoder
    (its Python-level overhead dominates) at about the same size; Pillow's
    adaptive row filters compress large photographs better, so this suits
    small arrays such as IDX images.

    Args:
        image: uint8 array [H, W] or [H, W, C], C 1 (gray), 3 (RGB) or 4
            (RGBA).

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: If the image is not uint8 or not shaped as above.
    """
    if image.dtype != np.uint8:
        raise ValueError(f'image must be uint8, got {image.dtype}')
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if (image.ndim != 3 or image.shape[2] not in _PNG_COLOR_TYPES or
            0 in image.shape):
        raise ValueError('image must be [H, W] or [H, W, 1|3|4] with H, W > 0,'
                         f' got shape {image.shape}')
    height, width, channels = image.shape
    # Each row starts with its filter type byte: 0, no filter.
    rows = np.zeros((height, 1 + width * channels), np.uint8)
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack('>IIBBBBB', width, height, 8,
                         _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b''.join(
        (_PNG_SIGNATURE, _png_chunk(b'IHDR', header),
         _png_chunk(b'IDAT',
                    zlib.compress(rows.tobytes())), _png_chunk(b'IEND', b'')))


# The marker that ends a JPEG (EOI), zero padding after it allowed.
_JPEG_END = b'\xff\xd9'


def decode_image_file(path: str) -> bytes:
    """Checks an image file by decoding it fully, and returns it encoded.

    PNG and JPEG files are returned unchanged (their bytes are what the model
    decodes); other formats Pillow reads (BMP, GIF, ...) are re-encoded as
    PNG, keeping only the first frame of an animation.

    Args:
        path: The image file.

    Returns:
        PNG or JPEG bytes.

    Raises:
        InputDataError: If the file is missing, empty, not an image, or
            truncated or corrupt.
    """
    data = _read_bytes(path)
    if not data:
        raise InputDataError(path, 'is empty')
    try:
        # verify() checks what load() skips: for PNG, the CRC of every chunk
        # and the final IEND chunk. It leaves the image unusable, so reopen.
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if (image.format in ('JPEG', 'MPO') and
                    not data.rstrip(b'\x00').endswith(_JPEG_END)):
                # libjpeg only warns when the end-of-image marker is
                # missing, and often has every pixel by then.
                raise OSError('no JPEG end-of-image marker')
            if image.format in ('PNG', 'JPEG', 'MPO'):  # MPO: camera JPEG
                return data
            if image.mode not in _PNG_MODES:
                image = image.convert('RGBA' if 'A' in
                                      image.getbands() else 'RGB')
            buffer = io.BytesIO()
            image.save(buffer, format='PNG')
            return buffer.getvalue()
    except Image.UnidentifiedImageError as e:
        raise InputDataError(
            path, 'is not an image Pillow can read: unknown format or '
            f'damaged header (it starts with {data[:8]!r})') from e
    except Image.DecompressionBombError as e:
        raise InputDataError(path, f'is too large to decode safely: {e}') from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError,
            struct.error) as e:
        raise InputDataError(
            path, f'is a damaged or truncated image ({e}); replace or remove '
            'it') from e


@dataclasses.dataclass(frozen=True)
class ClassFolderDataset:
    """Image files found by `scan_class_folders`, by split, with labels.

    Attributes:
        class_names: Sorted class folder names; a label is an index into it.
        files: Split name ('train', 'test', 'eval') -> ((path, label), ...),
            sorted by path.
        skipped: Paths of files skipped because their extension is not in
            IMAGE_EXTENSIONS (hidden files are ignored, not listed), sorted.
    """
    class_names: Tuple[str, ...]
    files: Dict[str, Tuple[Tuple[str, int], ...]]
    skipped: Tuple[str, ...] = ()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(folder: str) -> Tuple[List[str], List[str]]:
    """Returns the sorted non-hidden (sub-folder names, file names)."""
    try:
        with os.scandir(folder) as entries:
            visible = [e for e in entries if not e.name.startswith('.')]
    except OSError as e:
        raise InputDataError(folder, f'cannot be listed: {e.strerror}') from e
    folders = sorted(e.name for e in visible if e.is_dir())
    files = sorted(e.name for e in visible if not e.is_dir())
    return folders, files


def _check_no_images_beside(folder: str, files: List[str],
                            subfolders_kind: str) -> None:
    """Raises InputDataError if `folder` holds images next to sub-folders."""
    images = [name for name in files if _is_image(name)]
    if images:
        raise InputDataError(
            folder, f'holds {len(images)} image files (e.g. {images[0]}) next '
            f'to {subfolders_kind}, so their class is ambiguous: move them '
            'into a class folder or remove them')


def _collect(folder: str, images: List[str], skipped: List[str]) -> None:
    """Collects image paths under a folder, as image_dataset_from_directory.

    Adds the image paths under folder (recursively) to images, others to
    skipped, as image_dataset_from_directory does.
    """
    subfolders, files = _list_folder(folder)
    for name in files:
        (images if _is_image(name) else skipped).append(
            os.path.join(folder, name))
    for name in subfolders:
        _collect(os.path.join(folder, name), images, skipped)


def _scan_split(folder: str, skipped: List[str]) -> Dict[str, List[str]]:
    """Returns class name -> image paths for the class folders in folder."""
    class_folders, files = _list_folder(folder)
    if not class_folders:
        raise InputDataError(
            folder, 'has no class folders: put the images of each class in '
            'their own sub-folder, e.g. '
            f'{os.path.join(folder, "cat", "1.png")}')
    _check_no_images_beside(folder, files, 'class folders')
    skipped.extend(os.path.join(folder, name) for name in files)
    classes = {}
    for name in class_folders:
        images: List[str] = []
        _collect(os.path.join(folder, name), images, skipped)
        if not images:
            raise InputDataError(
                os.path.join(folder, name), 'is a class folder with no '
                f'images (files ending in {", ".join(IMAGE_EXTENSIONS)})')
        classes[name] = images
    return classes


def holds_images(folder: str) -> bool:
    """Whether `folder` holds image files itself (not only in sub-folders)."""
    return os.path.isdir(folder) and any(
        _is_image(name) for name in _list_folder(folder)[1])


def scan_unlabelled_folder(root: str) -> Tuple[str, ...]:
    """The image files of a folder of images without labels, sorted.

    The files directly in `root` whose extension is in IMAGE_EXTENSIONS;
    sub-folders, hidden files and other files are not read.

    Raises:
        InputDataError: If root is missing, not a folder, cannot be listed or
            holds no image files.
    """
    if not os.path.isdir(root):
        raise InputDataError(
            root,
            'is not a folder' if os.path.exists(root) else 'does not exist')
    images = [
        os.path.join(root, name)
        for name in _list_folder(root)[1]
        if _is_image(name)
    ]
    if not images:
        raise InputDataError(
            root, 'holds no image files (ending in '
            f'{", ".join(IMAGE_EXTENSIONS)}) to pretrain on, nor a labelled '
            'image set (class folders, IDX or TFRecord files)')
    return tuple(images)


def scan_class_folders(root: str) -> ClassFolderDataset:
    """Lists image files and labels in Keras's class-folder layout.

    Lists the image files and labels in the layout Keras'
    image_dataset_from_directory reads: root/<class>/<image files>.

    If root holds split folders instead (train/, test/, and optionally eval/
    or validation/, which becomes split 'eval'), each holds class folders and
    gives a split; train/ is required. Otherwise everything is split 'train'.
    Images in sub-folders of a class folder belong to that class. Hidden files
    and folders (name starting with '.') are ignored; files whose extension
    is not in IMAGE_EXTENSIONS are skipped and listed in `skipped`.

    Args:
        root: The dataset folder.

    Returns:
        The files of each split with labels, indexing the sorted class names.

    Raises:
        InputDataError: If root is missing; split folders are mixed with
            other folders, or lack train/, or have both eval/ and
            validation/; a level has no class folders, or images next to its
            sub-folders; a class folder has no images; or a class has images
            in test/ or eval/ but not in train/.
    """
    if not os.path.isdir(root):
        raise InputDataError(
            root,
            'is not a folder' if os.path.exists(root) else 'does not exist')
    skipped: List[str] = []
    subfolders, files = _list_folder(root)
    splits = [name for name in subfolders if name in SPLIT_FOLDERS]
    if splits:
        others = [name for name in subfolders if name not in SPLIT_FOLDERS]
        if others:
            raise InputDataError(
                root, f'mixes split folders ({", ".join(splits)}) with other '
                f'folders ({", ".join(others)}): put all class folders inside '
                'train/ and test/, or use no split folders at all')
        if 'train' not in splits:
            raise InputDataError(
                root, f'has split folders ({", ".join(splits)}) but no '
                'train/ folder')
        if 'eval' in splits and 'validation' in splits:
            raise InputDataError(
                root, 'has both eval/ and validation/ split folders; keep one')
        _check_no_images_beside(root, files, 'split folders')
        skipped.extend(os.path.join(root, name) for name in files)
        split_folders = {
            SPLIT_FOLDERS[name]: os.path.join(root, name) for name in splits
        }
    else:
        split_folders = {'train': root}
    by_split = {
        split: _scan_split(folder, skipped)
        for split, folder in split_folders.items()
    }
    class_names = tuple(sorted(by_split['train']))
    for split, classes in by_split.items():
        missing = sorted(set(classes) - set(class_names))
        if missing:
            raise InputDataError(
                split_folders[split], 'has class folders missing from '
                f'{split_folders["train"]}: {", ".join(missing)}; every class '
                'needs training images')
    label = {name: index for index, name in enumerate(class_names)}
    return ClassFolderDataset(
        class_names=class_names,
        files={
            split:
                tuple(
                    sorted((path, label[name])
                           for name, paths in classes.items()
                           for path in paths))
            for split, classes in by_split.items()
        },
        skipped=tuple(sorted(skipped)))
