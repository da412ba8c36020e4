"""Pretraining without labels (models/convnet/pretraining.py): the Trainer's
run of the `pretrain` family on the run's tiny real tf.Transform output
(tests/tiny_transform.py; its labels are not read) lowers the masked
denoising autoencoder's loss, and the trunk it exports is what
`transfer_from` takes: a convnet's Trainer run started from it takes its
filter banks, exports, and answers from our model server. Reading an
unlabelled folder: here and in tests/test_bad_input.py."""

import json
import shutil

import numpy as np
import pytest

from common import names
from components.example_gen import data_source
from models import entry_points
from models import transfer
from models.convnet import pretraining
from serving import client as client_lib
from tests import datasets
from tests import tiny_transform as tiny
from tests.serving import server_utils

pytestmark = pytest.mark.heavy(25)  # Idle seconds: the run of seed 1245933834.

# tiny_transform's one block of 4 filters.
TRUNK_LAYERS = [
    'block0_conv0', 'block0_conv0_bn', 'block0_conv1', 'block0_conv1_bn'
]


@pytest.fixture(scope='module')
def pretrained(tiny_transformed, tmp_path_factory):
    """The pretrain family's Trainer run (2 epochs of 19 steps), its trunk
    pushed as version 1 of a model base path; (base path, its report)."""
    out = tmp_path_factory.mktemp('pretrain')
    pretraining.run(tiny.fn_args(tiny_transformed, out, epochs=2))
    with open(out / 'model_run' / names.TRAINING_REPORT, encoding='utf-8') as f:
        report = json.load(f)['pretraining']
    base = out / 'trunks'
    shutil.copytree(out / 'serving_model', base / '1')
    return base, report


def test_pretraining_lowers_the_reconstruction_loss(pretrained):
    _, report = pretrained
    loss = report['loss']
    assert len(loss) == 2
    assert report['steps'] == 2 * -(-tiny.TRAIN // tiny.PARAMS['batch_size'])
    assert loss[-1] < 0.8 * loss[0], loss
    assert report['trunk_layers'] == TRUNK_LAYERS


def test_the_trunk_transfers_into_a_convnet_that_exports_and_serves(
        pretrained, tiny_transformed, tmp_path):
    base, _ = pretrained
    trunk = transfer.saved_model_variables(str(base / '1'))
    out = tmp_path / 'convnet'
    entry_points.convnet_run_fn(
        tiny.fn_args(tiny_transformed, out, epochs=1, transfer_from=str(base)))
    with open(out / 'model_run' / names.TRAINING_REPORT, encoding='utf-8') as f:
        taken = json.load(f)['transfer']
    assert taken['transfer_from'] == str(base / '1')
    assert taken['layers'] == TRUNK_LAYERS
    # One epoch, all of it frozen: the exported filter banks are the trunk's.
    exported = transfer.saved_model_variables(str(out / 'serving_model'))
    for name in ('block0_conv0/kernel:0', 'block0_conv1/kernel:0'):
        np.testing.assert_array_equal(exported[name].numpy(),
                                      trunk[name].numpy())

    served = tmp_path / 'serving' / 'convnet'
    shutil.copytree(out / 'serving_model', served / '1')
    server = server_utils.start_model_server(
        tmp_path, ['--model_name=convnet', f'--model_base_path={served}'],
        rest=False)
    images, _ = datasets.images_with_labels(3, tiny.CLASSES, 5, tiny.SIZE)
    try:
        with client_lib.ModelServerClient(server.grpc_address) as client:
            answers = client.predict_images(
                'convnet', [datasets.png_bytes(image) for image in images])
    finally:
        server.stop()
    assert len(answers) == 3
    for answer in answers:
        assert answer.top_class in tiny.PARAMS['class_names']


def test_an_unlabelled_folder_or_a_labelled_set_is_read_as_images(tmp_path):
    flat = datasets.write_class_folders(str(tmp_path / 'labelled'),
                                        ['cat', 'dog'],
                                        per_class=2)
    labelled = data_source.detect(flat, names.UNLABELLED_IMAGES)
    assert (labelled.format, labelled.kind) == ('class_folders',
                                                names.UNLABELLED_IMAGES)
    folder = tmp_path / 'unlabelled'
    shutil.copytree(tmp_path / 'labelled' / 'train' / 'cat', folder)
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'more').mkdir()  # Sub-folders are not read.
    source = data_source.detect(str(folder), names.UNLABELLED_IMAGES)
    assert (source.format, source.split_patterns,
            source.class_names) == ('unlabelled_folder', {
                names.TRAIN: '*'
            }, ())
    data_source.check_first_records(source)
