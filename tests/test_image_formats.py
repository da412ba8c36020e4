"""Tests for formats/image_formats.py: IDX, PNG encoding, image folders."""

import contextlib
import gzip
import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from formats import image_formats
from formats.errors import InputDataError

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """Builds an IDX file by hand, independently of the reader under test."""
    header = bytes([0, 0, type_code, array.ndim])
    header += struct.pack(f'>{array.ndim}i', *array.shape)
    return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def write(path, data: bytes) -> str:
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def write_idx(path,
              array: np.ndarray,
              type_code: int = 0x08,
              compress: bool = False) -> str:
    data = idx_bytes(array, type_code)
    return write(path, gzip.compress(data) if compress else data)


def image_bytes(array: np.ndarray, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@contextlib.contextmanager
def raises_input_error(path, *phrases):
    """Expects InputDataError naming path, its reason containing phrases."""
    with pytest.raises(InputDataError) as info:
        yield info
    assert info.value.path == str(path)
    for phrase in phrases:
        assert phrase in info.value.reason, (phrase, info.value.reason)


RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
RGB = RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8)

# --- read_idx ---------------------------------------------------------------


@pytest.mark.parametrize('type_code,dtype', [(0x08, np.uint8), (0x09, np.int8),
                                             (0x0B, np.int16), (0x0C, np.int32),
                                             (0x0D, np.float32),
                                             (0x0E, np.float64)])
@pytest.mark.parametrize('compress', [False, True])
def test_read_idx_each_type(tmp_path, type_code, dtype, compress):
    kind = np.dtype(dtype).kind
    info = np.finfo(dtype) if kind == 'f' else np.iinfo(dtype)
    values = [info.min, 0, 1, 100, info.max]
    values += {'u': [7], 'i': [-1], 'f': [-0.25]}[kind]
    array = np.array(values, dtype).reshape(2, 3)
    path = write_idx(tmp_path / 'a-idx2', array, type_code, compress)
    result = image_formats.read_idx(path)
    assert result.dtype == np.dtype(dtype)  # native byte order
    assert result.shape == (2, 3)
    np.testing.assert_array_equal(result, array)
    result[0, 0] = 0  # writable


@pytest.mark.parametrize('shape', [(4,), (3, 5, 2), (2, 3, 4, 3)])
def test_read_idx_shapes(tmp_path, shape):
    array = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    result = image_formats.read_idx(write_idx(tmp_path / 'x', array))
    np.testing.assert_array_equal(result, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    plain = write_idx(tmp_path / 'plain.gz', array)
    packed = write_idx(tmp_path / 'packed-idx2-ubyte', array, compress=True)
    np.testing.assert_array_equal(image_formats.read_idx(plain), array)
    np.testing.assert_array_equal(image_formats.read_idx(packed), array)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / 'nope'
    with raises_input_error(path, 'does not exist'):
        image_formats.read_idx(str(path))


def test_read_idx_empty_and_short(tmp_path):
    path = write(tmp_path / 'empty', b'')
    with raises_input_error(path, 'is empty'):
        image_formats.read_idx(path)
    path = write(tmp_path / 'short', b'\0\0\x08')
    with raises_input_error(path, 'too short', '3 bytes'):
        image_formats.read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = write(tmp_path / 'bad', b'PK\x03\x04' + bytes(20))
    with raises_input_error(path, 'not an IDX file', '50 4b 03 04'):
        image_formats.read_idx(path)


def test_read_idx_bad_magic_inside_gzip(tmp_path):
    path = write(tmp_path / 'bad.gz', gzip.compress(b'hello world'))
    with raises_input_error(path, 'not an IDX file', '68 65 6c 6c'):
        image_formats.read_idx(path)


def test_read_idx_unknown_type(tmp_path):
    path = write(tmp_path / 'bad', bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]))
    with raises_input_error(path, 'unknown IDX type code 0x0A', '0x08 (ubyte)'):
        image_formats.read_idx(path)


def test_read_idx_zero_dimensions(tmp_path):
    path = write(tmp_path / 'bad', bytes([0, 0, 0x08, 0]))
    with raises_input_error(path, '0 dimensions'):
        image_formats.read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = write(tmp_path / 'bad', bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0]))
    with raises_input_error(path, 'truncated IDX header', '16 header bytes',
                            'the file has 10'):
        image_formats.read_idx(path)


@pytest.mark.parametrize('compress', [False, True])
def test_read_idx_truncated_data(tmp_path, compress):
    data = idx_bytes(np.zeros((3, 4, 5), np.int16), 0x0B)[:-7]
    path = write(tmp_path / 'bad', gzip.compress(data) if compress else data)
    with raises_input_error(path, 'is truncated', '3x4x5 short values',
                            '(120 bytes', 'only 113 bytes follow') as info:
        image_formats.read_idx(path)
    assert ('after decompression' in info.value.reason) == compress


def test_read_idx_trailing_bytes(tmp_path):
    data = idx_bytes(np.zeros((2, 3), np.uint8), 0x08) + b'junk'
    path = write(tmp_path / 'bad', data)
    with raises_input_error(path, '4 unexpected bytes', '2x3 ubyte values',
                            'but 10 bytes follow'):
        image_formats.read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32), 0x0C))
    cut = write(tmp_path / 'cut.gz', packed[:len(packed) // 2])
    with raises_input_error(cut, 'cannot be decompressed', 'download it again'):
        image_formats.read_idx(cut)
    flipped = bytearray(packed)
    flipped[len(flipped) // 2] ^= 0xFF
    flipped = write(tmp_path / 'flipped.gz', bytes(flipped))
    with raises_input_error(flipped, 'cannot be decompressed'):
        image_formats.read_idx(flipped)
    garbage = write(tmp_path / 'garbage.gz', packed + b'garbage')
    with raises_input_error(garbage, 'cannot be decompressed'):
        image_formats.read_idx(garbage)


# --- labels_path_for --------------------------------------------------------


@pytest.mark.parametrize(
    'images,labels',
    [('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
     ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
     ('train-images.idx3-ubyte', 'train-labels.idx1-ubyte'),
     ('cifar-images-idx4-ubyte.gz', 'cifar-labels-idx1-ubyte.gz')])
def test_labels_path_for(tmp_path, images, labels):
    write(tmp_path / labels, b'')
    assert image_formats.labels_path_for(str(tmp_path / images)) == str(
        tmp_path / labels)


def test_labels_path_for_prefers_same_compression(tmp_path):
    write(tmp_path / 'train-labels-idx1-ubyte', b'')
    images = str(tmp_path / 'train-images-idx3-ubyte.gz')
    assert image_formats.labels_path_for(images) == str(
        tmp_path / 'train-labels-idx1-ubyte')  # the only one there
    write(tmp_path / 'train-labels-idx1-ubyte.gz', b'')
    assert image_formats.labels_path_for(images) == str(
        tmp_path / 'train-labels-idx1-ubyte.gz')


def test_labels_path_for_missing(tmp_path):
    images = str(tmp_path / 'train-images-idx3-ubyte.gz')
    with raises_input_error(tmp_path / 'train-labels-idx1-ubyte.gz',
                            'does not exist', images):
        image_formats.labels_path_for(images)


def test_labels_path_for_unknown_name(tmp_path):
    images = str(tmp_path / 'pictures.gz')
    with raises_input_error(images, 'train-images-idx3-ubyte.gz'):
        image_formats.labels_path_for(images)


# --- read_idx_dataset -------------------------------------------------------


def test_read_idx_dataset(tmp_path):
    images = RNG.integers(0, 256, (4, 3, 2), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2], np.uint8)
    got_images, got_labels = image_formats.read_idx_dataset(
        write_idx(tmp_path / 'i', images, compress=True),
        write_idx(tmp_path / 'l', labels),
        num_classes=3)
    np.testing.assert_array_equal(got_images, images)
    assert got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    assert got_labels.tolist() == [2, 0, 1, 2]


def test_read_idx_dataset_4d_and_int32_labels(tmp_path):
    images = RNG.integers(0, 256, (2, 3, 2, 3), dtype=np.uint8)
    labels = np.array([1, 0], np.int32)
    got_images, got_labels = image_formats.read_idx_dataset(
        write_idx(tmp_path / 'i', images),
        write_idx(tmp_path / 'l', labels, 0x0C),
        num_classes=2)
    assert got_images.shape == (2, 3, 2, 3)
    assert got_labels.tolist() == [1, 0]


def test_read_idx_dataset_count_mismatch(tmp_path):
    images = write_idx(tmp_path / 'i', np.zeros((4, 2, 2), np.uint8))
    labels = write_idx(tmp_path / 'l', np.zeros(3, np.uint8))
    with raises_input_error(labels, 'has 3 labels', f'{images} has 4 images'):
        image_formats.read_idx_dataset(images, labels, 10)


def test_read_idx_dataset_labels_out_of_range(tmp_path):
    images = write_idx(tmp_path / 'i', np.zeros((5, 2, 2), np.uint8))
    labels = write_idx(tmp_path / 'l', np.array([1, 9, 10, 12, 3], np.uint8))
    with raises_input_error(labels, 'label 10 at index 2', 'outside [0, 10)',
                            '2 of 5 labels'):
        image_formats.read_idx_dataset(images, labels, 10)


def test_read_idx_dataset_negative_label(tmp_path):
    images = write_idx(tmp_path / 'i', np.zeros((3, 2, 2), np.uint8))
    labels = write_idx(tmp_path / 'l', np.array([0, 1, -1], np.int8), 0x09)
    with raises_input_error(labels, 'label -1 at index 2', '1 of 3 labels'):
        image_formats.read_idx_dataset(images, labels, 2)


def test_read_idx_dataset_bad_shapes_and_types(tmp_path):
    labels = write_idx(tmp_path / 'l', np.zeros(2, np.uint8))
    flat = write_idx(tmp_path / 'flat', np.zeros((2, 4), np.uint8))
    with raises_input_error(flat, 'has 2 dimensions (2, 4)'):
        image_formats.read_idx_dataset(flat, labels, 10)
    floats = write_idx(tmp_path / 'f', np.zeros((2, 2, 2), np.float32), 0x0D)
    with raises_input_error(floats, 'holds float32 values', 'unsigned bytes'):
        image_formats.read_idx_dataset(floats, labels, 10)
    two_channels = write_idx(tmp_path / 'c', np.zeros((2, 2, 2, 2), np.uint8))
    with raises_input_error(two_channels, 'has 2 channels'):
        image_formats.read_idx_dataset(two_channels, labels, 10)
    images = write_idx(tmp_path / 'i', np.zeros((2, 2, 2), np.uint8))
    matrix = write_idx(tmp_path / 'm', np.zeros((2, 1), np.uint8))
    with raises_input_error(matrix, 'shaped (2, 1)', 'must be 1-d integers'):
        image_formats.read_idx_dataset(images, matrix, 10)
    float_labels = write_idx(tmp_path / 'fl', np.zeros(2, np.float64), 0x0E)
    with raises_input_error(float_labels, 'holds float64 values'):
        image_formats.read_idx_dataset(images, float_labels, 10)
    with pytest.raises(ValueError, match='num_classes'):
        image_formats.read_idx_dataset(images, labels, 0)


# --- encode_png -------------------------------------------------------------


@pytest.mark.parametrize('image,mode',
                         [(GRAY, 'L'), (GRAY[:, :, np.newaxis], 'L'),
                          (RGB, 'RGB'),
                          (RNG.integers(0, 256,
                                        (3, 8, 4), dtype=np.uint8), 'RGBA'),
                          (RGB[::2, ::-1], 'RGB')])  # not contiguous
def test_encode_png_round_trip(image, mode):
    data = image_formats.encode_png(image)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and IEND
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == 'PNG'
    assert decoded.mode == mode
    expected = image[:, :, 0] if image.shape[-1:] == (1,) else image
    np.testing.assert_array_equal(np.asarray(decoded), expected)


def test_encode_png_compresses():
    flat = np.full((28, 28), 7, np.uint8)
    assert len(image_formats.encode_png(flat)) < 100  # 784 raw bytes


@pytest.mark.parametrize('image', [
    np.zeros((4, 4), np.float32),
    np.zeros((4, 4, 2), np.uint8),
    np.zeros((4,), np.uint8),
    np.zeros((0, 4), np.uint8)
])
def test_encode_png_rejects(image):
    with pytest.raises(ValueError):
        image_formats.encode_png(image)


# --- decode_image_file ------------------------------------------------------


def test_decode_png_and_jpeg_unchanged(tmp_path):
    # encode_png's output differs from Pillow's, so re-encoding would show.
    for name, data in [('a.png', image_formats.encode_png(RGB)),
                       ('b.jpg', image_bytes(RGB, 'JPEG')),
                       ('c.jpeg', image_bytes(GRAY, 'JPEG', progressive=True)),
                       ('d.gif', image_bytes(GRAY, 'PNG'))]:  # by content
        assert image_formats.decode_image_file(write(tmp_path / name,
                                                     data)) == data


@pytest.mark.parametrize('array', [GRAY, RGB])
def test_decode_bmp_as_png(tmp_path, array):
    path = write(tmp_path / 'a.bmp', image_bytes(array, 'BMP'))
    data = image_formats.decode_image_file(path)
    assert data.startswith(b'\x89PNG\r\n\x1a\n')
    np.testing.assert_array_equal(pixels(data), array)


def test_decode_gif_first_frame_as_png(tmp_path):
    frames = [
        Image.fromarray(np.full((4, 6), value, np.uint8)).convert('P')
        for value in (30, 200)
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer,
                   format='GIF',
                   save_all=True,
                   append_images=frames[1:])
    path = write(tmp_path / 'a.gif', buffer.getvalue())
    with Image.open(path) as gif:
        assert gif.n_frames == 2
    decoded = Image.open(io.BytesIO(image_formats.decode_image_file(path)))
    assert decoded.format == 'PNG'
    np.testing.assert_array_equal(np.asarray(decoded.convert('L')),
                                  np.full((4, 6), 30))


def test_decode_converts_modes_png_cannot_store(tmp_path):
    cmyk = Image.fromarray(RGB).convert('CMYK')
    buffer = io.BytesIO()
    cmyk.save(buffer, format='TIFF')
    path = write(tmp_path / 'a.tiff', buffer.getvalue())
    decoded = Image.open(io.BytesIO(image_formats.decode_image_file(path)))
    assert decoded.mode == 'RGB'
    np.testing.assert_array_equal(np.asarray(decoded),
                                  np.asarray(cmyk.convert('RGB')))


@pytest.mark.parametrize(
    'image_format,cut',
    [
        ('PNG', 12),  # no IEND chunk: load() alone does not notice
        ('PNG', 13),  # IDAT checksum cut
        ('PNG', 200),  # pixel data cut
        ('JPEG', 2),  # no end-of-image marker
        ('JPEG', 300)
    ])
def test_decode_truncated(tmp_path, image_format, cut):
    # Images of 20 fixed seeds, not of the module's RNG: whether a decoder
    # notices a cut can depend on the pixels (libjpeg often has them all
    # before the missing end marker), so the test must not depend on order.
    for seed in range(20):
        array = np.random.default_rng(seed).integers(0,
                                                     256, (40, 50, 3),
                                                     dtype=np.uint8)
        data = image_bytes(array, image_format)
        path = write(tmp_path / f'{seed}.img', data[:-cut])
        with raises_input_error(path, 'damaged or truncated'):
            image_formats.decode_image_file(path)


def test_decode_corrupt_png_checksum(tmp_path):
    data = bytearray(image_bytes(RGB, 'PNG'))
    data[-20] ^= 0xFF  # inside the IDAT chunk
    path = write(tmp_path / 'a.png', bytes(data))
    with raises_input_error(path, 'damaged or truncated'):
        image_formats.decode_image_file(path)


def test_decode_not_an_image(tmp_path):
    path = write(tmp_path / 'notes.png', b'these are my notes')
    with raises_input_error(path, 'not an image', "b'these ar'"):
        image_formats.decode_image_file(path)
    path = write(tmp_path / 'header.png', image_bytes(RGB, 'PNG')[:20])
    with raises_input_error(path, 'damaged or truncated'):
        image_formats.decode_image_file(path)


def test_decode_empty_and_missing(tmp_path):
    path = write(tmp_path / 'empty.jpg', b'')
    with raises_input_error(path, 'is empty'):
        image_formats.decode_image_file(path)
    with raises_input_error(tmp_path / 'nope.png', 'does not exist'):
        image_formats.decode_image_file(str(tmp_path / 'nope.png'))
    with raises_input_error(tmp_path, 'is a folder'):
        image_formats.decode_image_file(str(tmp_path))


# --- scan_class_folders -----------------------------------------------------


def make_tree(root, files):
    """Creates files (relative path -> bytes) under root; returns str(root)."""
    for relative, data in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write(path, data)
    return str(root)


PNG_GRAY = image_bytes(GRAY, 'PNG')
JPEG_RGB = image_bytes(RGB, 'JPEG')
BMP_BIG = image_bytes(RNG.integers(0, 256, (30, 20, 3), dtype=np.uint8), 'BMP')


def test_scan_flat_layout(tmp_path):
    root = make_tree(
        tmp_path,
        {
            'dog/2.JPG': JPEG_RGB,
            'dog/1.png': PNG_GRAY,
            'cat/a.bmp': BMP_BIG,
            'cat/more/b.gif': image_bytes(GRAY, 'GIF'),  # nested: still 'cat'
            'cat/notes.txt': b'x',
            'README.md': b'x',
            'cat/.DS_Store': b'x',
            '.hidden/x.png': PNG_GRAY,
            '.ipynb_checkpoints/x.png': PNG_GRAY
        })
    dataset = image_formats.scan_class_folders(root)
    assert dataset.class_names == ('cat', 'dog')

    def join(*parts):
        return os.path.join(root, *parts)

    assert dataset.files == {
        'train': ((join('cat', 'a.bmp'), 0), (join('cat', 'more', 'b.gif'), 0),
                  (join('dog', '1.png'), 1), (join('dog', '2.JPG'), 1))
    }
    assert dataset.skipped == (join('README.md'), join('cat', 'notes.txt'))
    # Gray, colour and different sizes all decode to the expected pixels.
    shapes = [
        pixels(image_formats.decode_image_file(path)).shape
        for path, _ in dataset.files['train']
    ]
    assert shapes == [(30, 20, 3), (5, 7), (5, 7), (6, 4, 3)]


def test_scan_split_layout(tmp_path):
    root = make_tree(
        tmp_path, {
            'train/b/1.png': PNG_GRAY,
            'train/a/1.jpg': JPEG_RGB,
            'train/c/1.jpeg': JPEG_RGB,
            'test/c/9.png': PNG_GRAY,
            'validation/a/5.png': PNG_GRAY,
            'LICENSE': b'x'
        })
    dataset = image_formats.scan_class_folders(root)
    assert dataset.class_names == ('a', 'b', 'c')

    def join(*parts):
        return os.path.join(root, *parts)

    assert dataset.files == {
        'train': ((join('train', 'a',
                        '1.jpg'), 0), (join('train', 'b', '1.png'), 1),
                  (join('train', 'c', '1.jpeg'), 2)),
        'test': ((join('test', 'c', '9.png'), 2),),
        'eval': ((join('validation', 'a', '5.png'), 0),)
    }
    assert dataset.skipped == (join('LICENSE'),)


def test_scan_split_layout_eval_folder(tmp_path):
    root = make_tree(tmp_path, {
        'train/a/1.png': PNG_GRAY,
        'eval/a/2.png': PNG_GRAY
    })
    dataset = image_formats.scan_class_folders(root)
    assert dataset.files['eval'] == ((os.path.join(root, 'eval', 'a',
                                                   '2.png'), 0),)
    assert set(dataset.files) == {'train', 'eval'}


def test_scan_root_missing(tmp_path):
    with raises_input_error(tmp_path / 'nope', 'does not exist'):
        image_formats.scan_class_folders(str(tmp_path / 'nope'))
    path = write(tmp_path / 'file', b'')
    with raises_input_error(path, 'is not a folder'):
        image_formats.scan_class_folders(path)


def test_scan_no_class_folders(tmp_path):
    root = make_tree(tmp_path, {'1.png': PNG_GRAY, '.hidden/2.png': PNG_GRAY})
    with raises_input_error(root, 'has no class folders'):
        image_formats.scan_class_folders(root)


def test_scan_class_folder_without_images(tmp_path):
    root = make_tree(tmp_path, {
        'a/1.png': PNG_GRAY,
        'b/notes.txt': b'x',
        'b/.2.png': PNG_GRAY
    })
    with raises_input_error(tmp_path / 'b', 'class folder with no images',
                            '.png, .jpg'):
        image_formats.scan_class_folders(root)


def test_scan_images_next_to_class_folders(tmp_path):
    root = make_tree(tmp_path, {'a/1.png': PNG_GRAY, 'stray.jpg': JPEG_RGB})
    with raises_input_error(root, '1 image files (e.g. stray.jpg)',
                            'next to class folders', 'ambiguous'):
        image_formats.scan_class_folders(root)
    root = make_tree(tmp_path / 'split', {
        'train/a/1.png': PNG_GRAY,
        'train/x.png': PNG_GRAY
    })
    with raises_input_error(os.path.join(root, 'train'), 'next to class'):
        image_formats.scan_class_folders(root)
    root = make_tree(tmp_path / 'split2', {
        'train/a/1.png': PNG_GRAY,
        'x.png': PNG_GRAY
    })
    with raises_input_error(root, 'next to split folders'):
        image_formats.scan_class_folders(root)


def test_scan_mixed_layout(tmp_path):
    root = make_tree(tmp_path, {
        'train/a/1.png': PNG_GRAY,
        'test/a/1.png': PNG_GRAY,
        'b/1.png': PNG_GRAY
    })
    with raises_input_error(root, 'mixes split folders (test, train)',
                            'other folders (b)'):
        image_formats.scan_class_folders(root)


def test_scan_class_in_test_missing_from_train(tmp_path):
    root = make_tree(
        tmp_path, {
            'train/a/1.png': PNG_GRAY,
            'test/a/1.png': PNG_GRAY,
            'test/z/1.png': PNG_GRAY
        })
    with raises_input_error(tmp_path / 'test', 'missing from', ': z;'):
        image_formats.scan_class_folders(root)


def test_scan_split_errors(tmp_path):
    root = make_tree(tmp_path / 'a', {'test/a/1.png': PNG_GRAY})
    with raises_input_error(root, 'no train/ folder'):
        image_formats.scan_class_folders(root)
    root = make_tree(
        tmp_path / 'b', {
            'train/a/1.png': PNG_GRAY,
            'eval/a/1.png': PNG_GRAY,
            'validation/a/1.png': PNG_GRAY
        })
    with raises_input_error(root, 'both eval/ and validation/'):
        image_formats.scan_class_folders(root)
    root = make_tree(tmp_path / 'c', {'train/a/1.png': PNG_GRAY})
    os.mkdir(os.path.join(root, 'test'))
    with raises_input_error(os.path.join(root, 'test'), 'no class folders'):
        image_formats.scan_class_folders(root)


# --- the real Fashion-MNIST files -------------------------------------------


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason='Fashion-MNIST files not installed')
def test_fashion_mnist():
    images_path = os.path.join(FASHION_MNIST_DIR, 'train-images-idx3-ubyte.gz')
    labels_path = image_formats.labels_path_for(images_path)
    assert labels_path == os.path.join(FASHION_MNIST_DIR,
                                       'train-labels-idx1-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        images_path, labels_path, len(image_formats.FASHION_MNIST_CLASS_NAMES))
    assert images.shape == (60000, 28, 28)
    assert images.dtype == np.uint8
    with gzip.open(labels_path) as f:
        first_label = f.read(9)[8]  # after the 8-byte header
    assert labels[0] == first_label == 9  # 'Ankle boot'
    assert np.bincount(labels).tolist() == [6000] * 10
    with gzip.open(images_path) as f:
        first_image = np.frombuffer(f.read(16 + 784)[16:], np.uint8)
    np.testing.assert_array_equal(images[0].ravel(), first_image)
    np.testing.assert_array_equal(pixels(image_formats.encode_png(images[0])),
                                  images[0])
