"""Command line for a running model server: every subcommand but `serve`.

    python -m serving predict --server HOST:PORT --model NAME
        [--version N | --label L] [--top K] FILE...
    python -m serving status --server HOST:PORT --model NAME
    python -m serving local-config CONFIG --models-dir DIR [--output FILE]

`predict` takes image files (anything Pillow reads; PNG and JPEG are sent as
they are, other formats re-encoded as PNG), sequence files (`.ts`, and
long-format `.csv`) and clips (`.npy`/`.npz` arrays, or folders of frame
images: formats/clip_formats.py), and prints the most likely classes of
each input, with the true label when the file carries one.

`local-config` rewrites the container base paths (`/models/...`) of a
ModelServerConfig text proto to a local folder, so the local server can read
the same `serving/deploy/config/models.config` that TF Serving reads.

Errors (server down, unknown model, unreadable file) print one line on
stderr and exit with status 1; usage errors exit with status 2.
"""

import argparse
import os
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

from common import arguments
from serving.errors import ServingError

_EXIT_ERROR = 1
_SEQUENCE_SUFFIXES = ('.ts', '.csv')
_CLIP_SUFFIXES = ('.npy', '.npz')
_CONTAINER_MODELS_DIR = '/models'


class CliError(Exception):
    """An error to report as one line, without a traceback."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m serving',
        description='Query a TF Serving-compatible model server.')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    commands.required = True

    predict = commands.add_parser(
        'predict',
        help='classify image, sequence and clip files',
        description='Classify image files (PNG, JPEG, anything Pillow reads), '
        'sequence files (.ts, long-format .csv) and clips (.npy, .npz, or a '
        'folder of frame images).')
    _add_server_args(predict)
    which = predict.add_mutually_exclusive_group()
    which.add_argument('--version', type=int, help='model version number')
    which.add_argument('--label', help='model version label')
    predict.add_argument('--top',
                         type=arguments.positive_int,
                         default=5,
                         metavar='K',
                         help='classes to show per input (default 5)')
    predict.add_argument('files',
                         nargs='+',
                         metavar='FILE',
                         help='image files (anything Pillow reads), '
                         'sequence files (.ts, long-format .csv) or clips '
                         '(.npy, .npz, a folder of frames)')

    status = commands.add_parser(
        'status', help="show the state of each of a model's versions")
    _add_server_args(status)

    local = commands.add_parser(
        'local-config',
        help='rewrite the container base paths of a models.config',
        description='Print a ModelServerConfig whose base paths under '
        f'{_CONTAINER_MODELS_DIR} are moved to a local folder.')
    local.add_argument('config', help='ModelServerConfig text proto')
    local.add_argument('--models-dir',
                       required=True,
                       help='local folder standing for '
                       f'{_CONTAINER_MODELS_DIR}')
    local.add_argument('--container-dir',
                       default=_CONTAINER_MODELS_DIR,
                       help='base path prefix to replace (default '
                       f'{_CONTAINER_MODELS_DIR})')
    local.add_argument('--output',
                       '-o',
                       help='write here instead of standard output')
    return parser


def commands() -> List[Tuple[str, str]]:
    """(name, help) of each subcommand, in the order `--help` lists them."""
    parser = _build_parser()
    [subparsers] = [
        a for a in parser._actions  # pylint: disable=protected-access
        if isinstance(a, argparse._SubParsersAction)
    ]  # pylint: disable=protected-access
    return [(a.dest, a.help) for a in subparsers._choices_actions]  # pylint: disable=protected-access


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--server',
                        required=True,
                        metavar='HOST:PORT',
                        help="the model server's gRPC address")
    parser.add_argument('--model', required=True, help='model name')
    parser.add_argument('--timeout',
                        type=float,
                        default=30.0,
                        help='seconds to wait for each request (default 30)')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one subcommand.

    Args:
        argv: The arguments after the program name, starting with the
            subcommand (default: sys.argv[1:]).

    Returns:
        The exit status: 0 on success, 1 on errors (2 for usage errors, which
        argparse reports by raising SystemExit).
    """
    args = _build_parser().parse_args(
        list(sys.argv[1:] if argv is None else argv))
    # The client does not import TensorFlow, but a file reader may: its C++
    # start-up messages (level 2 still lets "Unable to register cuDNN
    # factory" through) would bury the one-line errors and the results.
    if 'tensorflow' not in sys.modules:
        os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    warnings.filterwarnings('ignore', category=FutureWarning)
    try:
        if args.command == 'predict':
            _predict(args)
        elif args.command == 'status':
            _status(args)
        else:
            _local_config(args)
    except Exception as e:  # pylint: disable=broad-except
        if not _is_expected(e):
            raise
        # One line, even when the server's message has several.
        message = ' '.join(line.strip() for line in str(e).splitlines())
        print(f'error: {message}', file=sys.stderr)
        return _EXIT_ERROR
    return 0


def _is_expected(error: Exception) -> bool:
    """True for errors worth one line: bad input, I/O, the server's answer."""
    return isinstance(error, (CliError, OSError, ValueError, ServingError))


# --- predict -----------------------------------------------------------------


class _Input:
    """One thing to classify: an image, one sequence of a file, a clip."""

    def __init__(self,
                 name: str,
                 image: Optional[bytes] = None,
                 sequence=None,
                 label: str = '',
                 clip=None):
        self.name = name
        self.image = image
        self.sequence = sequence
        self.label = label
        self.clip = clip


def _read_inputs(paths: Sequence[str]) -> List[_Input]:
    inputs: List[_Input] = []
    for path in paths:
        suffix = os.path.splitext(path)[1].lower()
        if os.path.isdir(path) or (suffix in _CLIP_SUFFIXES and
                                   os.path.isfile(path)):
            inputs.append(_Input(path, clip=_read_clip(path)))
            continue
        if not os.path.isfile(path):
            raise CliError(f'{path}: no such file')
        if suffix in _SEQUENCE_SUFFIXES:
            inputs.extend(_read_sequences(path, suffix))
        else:
            inputs.append(_Input(path, image=_read_image(path)))
    return inputs


def _read_sequences(path: str, suffix: str) -> List[_Input]:
    try:
        # Lazy: image prediction must not depend on the sequence readers.
        from formats import long_csv_format  # pylint: disable=import-outside-toplevel
        from formats import ts_format  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise CliError(f'{path}: cannot read sequence files ({e})') from None
    reader = (ts_format.read_ts
              if suffix == '.ts' else long_csv_format.read_long_csv)
    inputs = [
        _Input(f'{path} [{seq.series_id}]',
               sequence=seq.values,
               label=seq.label) for seq in reader(path)
    ]
    if not inputs:
        raise CliError(f'{path}: no sequences')
    return inputs


def _read_clip(path: str):
    """A clip (a `.npy`/`.npz` or a folder of frames), as read to train."""
    # Lazy: image and sequence prediction must not depend on the clip reader.
    from formats import clip_formats  # pylint: disable=import-outside-toplevel
    from formats.errors import InputDataError  # pylint: disable=import-outside-toplevel
    try:
        return clip_formats.read_clip(path)
    except InputDataError as e:
        raise CliError(str(e)) from None


def _read_image(path: str) -> bytes:
    """The file as PNG or JPEG bytes, decoded as the pipeline's reader does."""
    # Lazy: sequence prediction must not depend on the image readers.
    from formats import image_formats  # pylint: disable=import-outside-toplevel
    from formats.errors import InputDataError  # pylint: disable=import-outside-toplevel
    try:
        return image_formats.decode_image_file(path)
    except InputDataError as e:
        raise CliError(
            f'{e.path}: neither an image nor a sequence file '
            f'({", ".join(_SEQUENCE_SUFFIXES)}): it {e.reason}') from None


def _predict(args: argparse.Namespace) -> None:
    from serving import client as client_lib  # pylint: disable=import-outside-toplevel
    inputs = _read_inputs(args.files)
    images = [i for i in inputs if i.image is not None]
    sequences = [i for i in inputs if i.sequence is not None]
    clips = [i for i in inputs if i.clip is not None]
    results = {}
    with client_lib.ModelServerClient(args.server, args.timeout) as client:
        if images:
            predictions = client.predict_images(args.model,
                                                [i.image for i in images],
                                                version=args.version,
                                                label=args.label,
                                                top_k=args.top)
            results.update(zip(map(id, images), predictions))
        if sequences:
            predictions = client.predict_sequences(
                args.model, [i.sequence for i in sequences],
                version=args.version,
                label=args.label,
                top_k=args.top)
            results.update(zip(map(id, sequences), predictions))
        if clips:
            predictions = client.predict_clips(args.model,
                                               [i.clip for i in clips],
                                               version=args.version,
                                               label=args.label,
                                               top_k=args.top)
            results.update(zip(map(id, clips), predictions))
    for item in inputs:
        print(_format_prediction(item, results[id(item)].pairs()))


def _format_prediction(item: _Input, pairs: List[Tuple[str, float]]) -> str:
    header = item.name
    if item.label:
        header += f'  (true label: {item.label})'
    width = max(len(name) for name, _ in pairs)
    lines = [header] + [
        f'  {rank}. {name:<{width}}  {score:.4f}'
        for rank, (name, score) in enumerate(pairs, 1)
    ]
    return '\n'.join(lines)


# --- status ------------------------------------------------------------------


def _status(args: argparse.Namespace) -> None:
    from serving import client as client_lib  # pylint: disable=import-outside-toplevel
    with client_lib.ModelServerClient(args.server, args.timeout) as client:
        statuses = client.model_status(args.model)
    print(f'model {args.model}')
    if not statuses:
        print('  no versions')
    for status in statuses:
        print(f'  {status}')


# --- local-config ------------------------------------------------------------


def localize_model_config(text: str,
                          models_dir: str,
                          container_dir: str = _CONTAINER_MODELS_DIR) -> str:
    """Moves the base paths under `container_dir` of a models.config.

    Args:
        text: A ModelServerConfig in text format.
        models_dir: The local folder that stands for `container_dir`.
        container_dir: The base path prefix to replace.

    Returns:
        The config in text format, with base paths such as
        `/models/convnet` rewritten to `<models_dir>/convnet` (absolute).

    Raises:
        ValueError: The text is not a ModelServerConfig.
    """
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=import-outside-toplevel
    config = text_format.Parse(text,
                               model_server_config_pb2.ModelServerConfig())
    prefix = container_dir.rstrip('/')
    local = os.path.abspath(models_dir)
    for model in config.model_config_list.config:
        path = model.base_path
        if path == prefix or path.startswith(prefix + '/'):
            model.base_path = local + path[len(prefix):]
    return text_format.MessageToString(config)


def _local_config(args: argparse.Namespace) -> None:
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    with open(args.config, encoding='utf-8') as f:
        text = f.read()
    try:
        result = localize_model_config(text, args.models_dir,
                                       args.container_dir)
    except text_format.ParseError as e:
        raise CliError(f'{args.config}: not a ModelServerConfig: {e}') from None
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(result)
    else:
        sys.stdout.write(result)


if __name__ == '__main__':
    sys.exit(main())
