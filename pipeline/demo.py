"""`python -m pipeline demo --home DIR`: serve the pushed models and ask them.

Starts the model server over every model pushed to `<home>/serving`, waits
until each is AVAILABLE, sends a few files from its data set's test split over
gRPC, and prints the answers next to the true labels. The files are left in
`<home>/demo_queries/`, so the same questions can be asked again with
`python -m serving predict`.
"""

import os
import sys
import tempfile
from typing import List, Tuple

from common import names
from formats import image_formats
from formats import ts_format
from pipeline import profiles
from serving import client as client_lib
from serving.process import ServerProcess
from serving.process import free_port
from serving.process import server_command

_WAIT_SECONDS = 180


def _model_config(serving_dir: str, models: List[str]) -> str:
    entries = ''.join(
        f'  config {{ name: "{m}" base_path: "{os.path.join(serving_dir, m)}" '
        'model_platform: "tensorflow" }\n' for m in models)
    return f'model_config_list {{\n{entries}}}\n'


def _image_queries(folder: str, count: int) -> List[Tuple[str, str]]:
    """(PNG path, true class) for the first test images of Fashion-MNIST."""
    source = profiles.MODELS['convnet'].default_data
    images_path = os.path.join(source, 't10k-images-idx3-ubyte.gz')
    images, labels = image_formats.read_idx_dataset(
        images_path, image_formats.labels_path_for(images_path),
        len(image_formats.FASHION_MNIST_CLASS_NAMES))
    queries = []
    for i in range(count):
        path = os.path.join(folder, f'fashion_mnist_test_{i}.png')
        with open(path, 'wb') as f:
            f.write(image_formats.encode_png(images[i]))
        queries.append(
            (path, image_formats.FASHION_MNIST_CLASS_NAMES[labels[i]]))
    return queries


def _sequence_queries(folder: str, count: int):
    """The first test series of JapaneseVowels, and a .ts file of them."""
    _, test_path = ts_format.find_ts_pair(profiles.MODELS['rnn'].default_data)
    header = ts_format.read_ts_header(test_path)
    sequences = []
    for sequence in ts_format.read_ts(test_path):
        sequences.append(sequence)
        if len(sequences) == count:
            break
    path = os.path.join(folder, 'japanese_vowels_test.ts')
    ts_format.write_ts(path, sequences, header.problem_name,
                       header.class_labels)
    return path, sequences


def run(home: str, count: int = 5) -> int:
    """Serves `<home>/serving` and queries each model; returns an exit code."""
    serving_dir = os.path.join(os.path.abspath(home), 'serving')
    models = sorted(m for m in profiles.MODELS
                    if os.path.isdir(os.path.join(serving_dir, m)))
    if not models:
        print(f'error: no pushed model under {serving_dir}', file=sys.stderr)
        return 1
    queries = os.path.join(os.path.abspath(home), 'demo_queries')
    os.makedirs(queries, exist_ok=True)
    config_path = os.path.join(queries, 'models.config')
    with open(config_path, 'w', encoding='utf-8') as f:
        f.write(_model_config(serving_dir, models))

    port = free_port()
    command = server_command(port, models[0], serving_dir)
    command = [
        c for c in command
        if not c.startswith(('--model_name=', '--model_base_path='))
    ]
    command.append(f'--model_config_file={config_path}')
    with tempfile.NamedTemporaryFile(suffix='.log', delete=False) as log:
        server = ServerProcess(command, log.name)
    address = f'127.0.0.1:{port}'
    print(
        f'model server on {address} serving {", ".join(models)} '
        f'from {serving_dir} (log: {log.name})',
        flush=True)
    try:
        with client_lib.ModelServerClient(address) as client:
            for model in models:
                client.wait_until_available(model, _WAIT_SECONDS)
                print(f'\n{model}: {client.model_status(model)[0]}', flush=True)
                if profiles.MODELS[model].kind == names.IMAGES:
                    asked = _image_queries(queries, count)
                    answers = client.predict_images(
                        model, [open(p, 'rb').read() for p, _ in asked],
                        top_k=1)
                    labelled = [
                        (os.path.basename(p), truth) for p, truth in asked
                    ]
                else:
                    path, sequences = _sequence_queries(queries, count)
                    answers = client.predict_sequences(
                        model, [s.values for s in sequences], top_k=1)
                    labelled = [(f'{os.path.basename(path)}[{i}]', s.label)
                                for i, s in enumerate(sequences)]
                for (name, truth), answer in zip(labelled, answers):
                    mark = 'ok   ' if answer.top_class == truth else 'WRONG'
                    print(f'  {mark} {name:32s} true {truth:12s} predicted '
                          f'{answer.top_class:12s} p={answer.top_score:.3f}')
        print('\nTo ask again: python -m serving serve --port 8500 '
              f'--model_config_file {config_path} &\n'
              '              python -m serving predict --server '
              f'127.0.0.1:8500 --model MODEL {queries}/FILE...')
    except client_lib.ServingError as error:
        print(f'error: {error}\n{server.log_tail()}', file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0
