"""The clip family (models/convnet3d/) and its reader (formats/clip_formats):
clips of frames or arrays read, bad clips stopped with one line, the model's
shapes and one training step, and an exported model our server serves.

The exported model is a real one: the family's run_fn trains one epoch on
a tiny real tf.Transform output of its preprocessing_fn (shared by the
tests that read it); the whole pipeline on the command line is run by hand
(docs/clips.md), not here.
"""

import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import util as beam_util
from PIL import Image
from tensorflow.core.example import example_pb2

from common import names
from common import signatures
from components.example_gen import clips as clip_reader
from components.serving_check import request_builder
from formats import clip_formats
from formats.errors import InputDataError
from models import data_facts
from models import entry_points
from models import features
from models.convnet3d import model as convnet3d
from models.convnet3d import preprocessing
from pipeline import beam_runners
from pipeline import cli
from serving import cli as serving_cli
from serving import client as client_lib
from tests.serving import server_utils

pytestmark = pytest.mark.heavy(50)  # Idle seconds: the run of seed 1245933834.

CLIP_SHAPE = [4, 8, 8, 1]
CLASSES = ['left', 'right']
PARAMS = {
    data_facts.CLIP_SHAPE: CLIP_SHAPE,
    'conv_filters': [4],
    'dense_units': 8,
    'dropout': 0.0,
    'learning_rate': 0.01,
    'class_names': CLASSES,
}


def _moving_dots(count, seed):
    """`count` clips of a dot moving left (label 0) or right (label 1)."""
    rng = np.random.default_rng(seed)
    frames, height, width, _ = CLIP_SHAPE
    clips = np.zeros([count, *CLIP_SHAPE], np.float32)
    labels = np.arange(count) % 2
    for n, label in enumerate(labels):
        row = rng.integers(height)
        start = rng.integers(frames) if label else rng.integers(
            frames - 1, width)
        for t in range(frames):
            clips[n, t, row, start + (t if label else -t), 0] = 255.0
    return clips, labels


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


# --- the reader ---------------------------------------------------------------


def test_a_clip_reads_the_same_from_npy_npz_and_a_folder_of_frames(tmp_path):
    clip = np.random.default_rng(0).integers(0, 256, (11, 5, 6), np.uint8)
    np.save(tmp_path / 'a.npy', clip)
    np.savez(tmp_path / 'b.npz', frames=clip)
    folder = tmp_path / 'c'
    folder.mkdir()
    # frame10 after frame9: the names' natural order, not their text order.
    for t, frame in enumerate(clip):
        _png(folder / f'frame{t}.png', frame)
    expected = clip[..., np.newaxis].astype(np.float32)
    for path in ('a.npy', 'b.npz', 'c'):
        assert clip_formats.clip_shape(str(tmp_path / path)) == (11, 5, 6, 1)
        np.testing.assert_array_equal(
            clip_formats.read_clip(str(tmp_path / path)), expected)
    colour = tmp_path / 'd'
    colour.mkdir()
    for t in range(3):
        _png(colour / f'{t}.png', np.full((5, 6, 3), t))
    assert clip_formats.read_clip(str(colour)).shape == (3, 5, 6, 3)


def _clip_set(root, per_class=2):
    for name in CLASSES:
        os.makedirs(root / name)
        for n in range(per_class):
            np.save(root / name / f'{n}.npy', np.zeros(CLIP_SHAPE[:3],
                                                       np.uint8))
    return root


def _wrong_rank(root):
    path = root / 'left' / '0.npy'
    np.save(path, np.zeros((8, 8)))
    return path, 'has 2 dimensions (8, 8)'


def _mismatched_frames(root):
    folder = root / 'right' / '9'
    folder.mkdir()
    for t, size in enumerate((8, 8, 7, 8)):
        _png(folder / f'{t}.png', np.zeros((size, 8)))
    return folder / '2.png', 'is a frame of 7x8 with 1 channel in a clip'


def _unreadable_frame(root):
    folder = root / 'right' / '9'
    folder.mkdir()
    for t in range(4):
        _png(folder / f'{t}.png', np.zeros((8, 8)))
    (folder / '1.png').write_bytes(b'not a png')
    return folder / '1.png', 'is a frame Pillow cannot read'


def _empty_clip(root):
    (root / 'left' / '9').mkdir()
    return root / 'left' / '9', 'is an empty clip'


def _no_frames(root):
    path = root / 'left' / '0.npy'
    np.save(path, np.zeros((0, 8, 8)))
    return path, 'is an empty clip: shape 0x8x8x1'


def _another_shape(root):
    path = root / 'right' / '1.npy'
    np.save(path, np.zeros((5, 8, 8)))
    return path, ('is a clip of 5 frames of 8x8x1, but the clips of this data '
                  'set are 4 frames of 8x8x1')


def _two_arrays(root):
    path = root / 'right' / '0.npz'
    np.savez(path, a=np.zeros(CLIP_SHAPE), b=np.zeros(CLIP_SHAPE))
    return path, 'holds 2 arrays (a, b)'


def _not_numbers(root):
    path = root / 'left' / '1.npy'
    np.save(path, np.full(CLIP_SHAPE[:3], 'x'))
    return path, 'holds <U1 values'


def _not_a_numpy_file(root):
    path = root / 'left' / '1.npy'
    path.write_bytes(b'\x93NUMPY garbage')
    return path, 'is not a NumPy array file'


def _nan_in_first_clip(root):
    path = root / 'left' / '0.npy'
    clip = np.zeros(CLIP_SHAPE[:3], np.float32)
    clip[2, 1, 1] = np.nan
    np.save(path, clip)
    return path, 'holds NaN or infinite values (the first at frame 2)'


@pytest.mark.parametrize('fault', [
    _wrong_rank, _mismatched_frames, _unreadable_frame, _empty_clip, _no_frames,
    _another_shape, _two_arrays, _not_numbers, _not_a_numpy_file,
    _nan_in_first_clip
],
                         ids=lambda f: f.__name__.strip('_'))
def test_a_bad_clip_exits_2_with_one_line_before_any_component(
        fault, tmp_path, capsys):
    data = _clip_set(tmp_path / 'data')
    path, fragment = fault(data)
    home = tmp_path / 'home'
    code = cli.main([
        'run', '--model', 'convnet3d', '--data',
        str(data), '--home',
        str(home)
    ])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert code == cli.EXIT_BAD_DATA, err
    assert len(errors) == 1, err
    assert errors[0].startswith(f'error: {path}: '), errors[0]
    assert fragment in errors[0], errors[0]
    assert 'Traceback' not in err, err
    assert not (home / 'metadata.sqlite').exists()  # No component ran.


def test_the_beam_reader_reports_a_clip_only_decoding_finds(tmp_path):
    """A truncated frame of a later clip: its header reads, its pixels not."""
    data = _clip_set(tmp_path / 'data')
    folder = data / 'right' / '9'
    folder.mkdir()
    for t in range(4):
        _png(folder / f'{t}.png',
             np.random.default_rng(t).integers(0, 256, (8, 8)))
    whole = (folder / '3.png').read_bytes()
    (folder / '3.png').write_bytes(whole[:-20])  # Its header intact.
    assert clip_formats.clip_shape(str(folder)) == tuple(CLIP_SHAPE)
    settings = {'class_names': CLASSES, 'clip_shape': CLIP_SHAPE}
    with beam.Pipeline(options=PipelineOptions(
            beam_runners.default_beam_args())) as pipeline:
        examples, bad = clip_reader.read_clip_folders(pipeline, settings,
                                                      [str(data / '*' / '*')])
        beam_util.assert_that(examples | beam.combiners.Count.Globally(),
                              beam_util.equal_to([4]),
                              label='Good')
        beam_util.assert_that(
            bad | beam.Map(lambda r: (r['path'], 'truncated' in r['reason'])),
            beam_util.equal_to([(str(folder / '3.png'), True)]),
            label='Bad')


# --- the model ----------------------------------------------------------------


@pytest.mark.parametrize('convolution', ['3d', 'per_frame'])
def test_the_model_scores_each_clip_and_one_step_lowers_the_loss(convolution):
    tf.keras.utils.set_random_seed(0)
    params = {**PARAMS, 'clip_convolution': convolution}
    model = convnet3d.build_model(params, len(CLASSES))
    kinds = {type(layer).__name__ for layer in model.submodules}
    assert ('Conv3D' in kinds) == (convolution == '3d')
    assert ('Conv2D' in kinds) == (convolution == 'per_frame')
    clips, labels = _moving_dots(16, 0)
    inputs = {names.CLIP_KEY: tf.constant((clips - 16) / 60)}
    scores = model(inputs, training=False).numpy()
    assert scores.shape == (16, len(CLASSES))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss='sparse_categorical_crossentropy')

    def loss():
        # Batch statistics, no dropout: the step's own view of the batch.
        return float(
            tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(
                    labels, model(inputs, training=True))))

    before = loss()
    model.train_on_batch(inputs, labels)
    assert loss() < before


# --- exported and served ------------------------------------------------------


def _raw_rows(count, seed):
    clips, labels = _moving_dots(count, seed)
    return [{
        names.CLIP_KEY: clip.ravel().tolist(),
        names.LABEL_KEY: [int(label)]
    } for clip, label in zip(clips, labels)]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(model base path, its version's SavedModel): the family's run_fn
    after one epoch on a tiny real tf.Transform output."""
    from tests import tiny_transform  # pylint: disable=import-outside-toplevel
    root = tmp_path_factory.mktemp('clips')
    tiny_transform.write_transform_output(
        root, {
            names.CLIP_KEY: tf.io.VarLenFeature(tf.float32),
            names.LABEL_KEY: tf.io.VarLenFeature(tf.int64)
        }, {
            'train': _raw_rows(64, 0),
            'eval': _raw_rows(16, 1)
        }, preprocessing.preprocessing_fn, {}, {
            data_facts.CLASS_NAMES: CLASSES,
            data_facts.CLIP_SHAPE: CLIP_SHAPE
        })
    out = root / 'trainer'
    base = {**tiny_transform.PARAMS, **PARAMS, 'epochs': 1, 'batch_size': 16}
    entry_points.convnet3d_run_fn(
        tiny_transform.fn_args(root, out, base_params=base))
    # A model base path with one version, as Pusher writes it.
    version = out / 'base' / '1'
    os.makedirs(version.parent)
    os.symlink(out / 'serving_model', version)
    return str(version.parent), str(version)


def _examples(clips, labels):
    return [
        features.clip_example(clip, int(label))
        for clip, label in zip(clips, labels)
    ]


def test_the_export_serves_examples_and_clips_alike(exported):
    _, version = exported
    model = tf.saved_model.load(version)
    assert sorted(model.signatures) == sorted(
        [signatures.DEFAULT_SIGNATURE, signatures.CLIP_SIGNATURE])
    clip_spec = model.signatures[
        signatures.CLIP_SIGNATURE].structured_input_signature[1][
            signatures.CLIP_INPUT]
    assert clip_spec.shape.as_list() == [None, *CLIP_SHAPE]
    assert clip_spec.dtype == tf.float32
    clips, labels = _moving_dots(6, 2)
    by_example = model.signatures[signatures.DEFAULT_SIGNATURE](
        inputs=tf.constant(_examples(clips, labels)))
    by_clip = model.signatures[signatures.CLIP_SIGNATURE](
        clips=tf.constant(clips))
    for answer in (by_example, by_clip):
        assert answer[signatures.SCORES_OUTPUT].shape == (6, len(CLASSES))
        assert [[c.decode()
                 for c in row]
                for row in answer[signatures.CLASSES_OUTPUT].numpy()
               ] == [CLASSES] * 6
    np.testing.assert_allclose(by_clip[signatures.SCORES_OUTPUT].numpy(),
                               by_example[signatures.SCORES_OUTPUT].numpy(),
                               atol=1e-5)


def test_our_server_classifies_examples_and_predicts_clips(
        exported, tmp_path, capsys):
    base, _ = exported
    clips, labels = _moving_dots(5, 3)
    examples = _examples(clips, labels)
    np.save(tmp_path / 'first.npy', clips[0, ..., 0])
    server = server_utils.start_model_server(
        tmp_path, ['--model_name=clips', f'--model_base_path={base}'],
        rest=False)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            client.wait_until_available('clips', 120)
            signature_defs = client.model_metadata('clips')
            # What the ServingCheck sends the clip signature.
            inputs = request_builder.build_signature_inputs(
                signatures.CLIP_SIGNATURE,
                signature_defs[signatures.CLIP_SIGNATURE], examples)
            predicted = client.predict('clips',
                                       inputs,
                                       signature=signatures.CLIP_SIGNATURE)
            classified = client.classify_examples('clips', examples)
            by_client = client.predict_clips('clips', clips, top_k=None)
        code = serving_cli.main([
            'predict', '--server', server.grpc_address, '--model', 'clips',
            '--top', '1',
            str(tmp_path / 'first.npy')
        ])
    finally:
        server.stop()
    assert code == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / 'first.npy') in printed, printed
    assert by_client[0].top_class in printed, printed
    np.testing.assert_array_equal(inputs[signatures.CLIP_INPUT], clips)
    scores = predicted[signatures.SCORES_OUTPUT]
    assert scores.shape == (5, len(CLASSES))
    assert [p.top_class for p in classified
           ] == [CLASSES[i] for i in scores.argmax(axis=1)]
    assert [p.top_class for p in by_client
           ] == [CLASSES[i] for i in scores.argmax(axis=1)]


def test_the_clip_set_generator_writes_what_the_reader_reads(tmp_path):
    from bench import moving_clips  # pylint: disable=import-outside-toplevel
    if not os.path.exists(names.FASHION_MNIST_DIR):
        pytest.skip('no Fashion-MNIST (make data)')
    counts = moving_clips.generate(str(tmp_path / 'clips'),
                                   train_per_class=2,
                                   test_per_class=1)
    assert counts == {'train': 8, 'test': 4}
    dataset = clip_formats.scan_clip_folders(str(tmp_path / 'clips'))
    assert dataset.class_names == tuple(sorted(moving_clips.DIRECTIONS))
    assert dataset.shape == (moving_clips.FRAMES, moving_clips.CANVAS,
                             moving_clips.CANVAS, 1)
    # Moving right: the item's leftmost column one pixel on each frame.
    clip = clip_formats.read_clip(
        str(tmp_path / 'clips' / 'train' / 'right' / '0.npy'))[..., 0]
    lefts = [int(np.flatnonzero(frame.any(axis=0))[0]) for frame in clip]
    assert np.all(np.diff(lefts) == 1), lefts
    example = example_pb2.Example.FromString(features.clip_example(clip, 0))
    assert len(example.features.feature[names.CLIP_KEY].float_list.value) == (
        clip.size)
    with pytest.raises(InputDataError):
        clip_formats.check_shape('x', (1, 2, 3, 4), dataset.shape)
