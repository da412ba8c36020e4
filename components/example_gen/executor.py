"""The ExampleGen executor shared by every raw format this project reads.

TFX's FileBasedExampleGen runs it on Beam. On top of TFX's base executor it
0. learns the data's layout at run time (format, splits, newest span, class
   names, channels: data_source.detect), where the data is, never where the
   pipeline was compiled, and writes what it learned beside the examples
   (models/data_facts.py) for Transform and the Trainer;
1. dispatches each input split to the reader of the data source's format;
2. carves the splits the data does not give (eval, test) out of train by a
   stable hash of the serialized example, so reruns split identically;
3. collects bad records (unreadable files, labels out of range, ...) in a side
   output instead of failing deep inside a Beam worker, then fails the run
   with an `InputDataError` naming the first bad file, or, when configured to
   skip, counts them on the Examples artifact (`bad_records_skipped`).
"""

import glob
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Tuple

import apache_beam as beam
from absl import logging
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tensorflow.core.example import example_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils

from common import names
from common.settings import ON_BAD_RECORD_SKIP
from components.example_gen import clips
from components.example_gen import data_source
from components.example_gen import images
from components.example_gen import sequences
from components.example_gen import spans
from formats import class_groups
from formats.errors import InputDataError
from models import data_facts

# Settings the pipeline gives (settings_to_custom_config): the data's kind
# and its name inside `input_base`, its parent.
KIND = 'kind'
DATA_NAME = 'data_name'
# Given for multi-task data only: the class -> group mapping file ('': the
# data's groups.json); each example then carries its group label too.
GROUPS_FILE = 'groups_file'
_CLASS_GROUPS = 'class_groups'
# Folder levels below the data that TFX's driver fingerprints, so that any
# changed file of our deepest layout (span-N/split/class/image) is seen.
_FINGERPRINT_DEPTH = 5

BAD_RECORDS_PROPERTY = 'bad_records_skipped'
_BAD_RECORDS_DIR_KEY = '_bad_records_dir'
_BAD_RECORDS_SHOWN = 10

# format -> reader(pipeline, settings, file patterns) -> (examples, bad records)
_READERS: Dict[str, Callable[..., Any]] = {
    'idx': images.read_idx,
    'class_folders': images.read_class_folders,
    'tfrecord': images.read_tfrecords,
    'clip_folders': clips.read_clip_folders,
    'unlabelled_folder': images.read_unlabelled_folder,
    'ts': sequences.read_ts,
    'csv': sequences.read_csv,
}


def settings_to_custom_config(
        settings: Dict[str, Any]) -> example_gen_pb2.CustomConfig:
    """Packs reader settings (a JSON-able dict) into custom_config."""
    struct = struct_pb2.Struct()
    struct.update(settings)
    config = example_gen_pb2.CustomConfig()
    config.custom_config.Pack(struct)
    return config


def fingerprint_input_config(data_name: str) -> example_gen_pb2.Input:
    """The compile-time input_config: patterns that match the data.

    The compile-time input_config: patterns under the data's parent that match
    the data (a folder, a file or a `.ts` prefix) and every file below it. TFX's
    ExampleGen driver fingerprints them for its cache; the executor replaces
    them with the splits it finds (`Executor.Do`).
    """
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=f'fingerprint-{depth}',
                                    pattern='/'.join([f'{data_name}*'] +
                                                     ['*'] * depth))
        for depth in range(_FINGERPRINT_DEPTH)
    ])


def _learn_layout(
        exec_properties: Dict[str,
                              Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The reading settings and data facts of the data, found now.

    (exec_properties for reading the data, the data facts): the layout found
    where the data is, now.
    """
    settings = _settings(exec_properties)
    source = data_source.detect(
        os.path.join(exec_properties['input_base'], settings[DATA_NAME]),
        settings[KIND])
    span = data_source.newest_span(source.root) if source.has_spans else 0
    splits = [
        example_gen_pb2.Input.Split(name=name,
                                    pattern=spans.fill(pattern, span))
        for name, pattern in source.split_patterns.items()
    ]
    settings.update(format=source.format, class_names=list(source.class_names))
    facts = {
        data_facts.CLASS_NAMES: list(source.class_names),
        data_facts.NUM_CHANNELS: source.num_channels,
        data_facts.FORMAT: source.format,
        data_facts.SPAN: span
    }
    if source.clip_shape is not None:
        settings['clip_shape'] = list(source.clip_shape)
        facts[data_facts.CLIP_SHAPE] = list(source.clip_shape)
    if GROUPS_FILE in settings:
        groups = class_groups.read(settings[GROUPS_FILE], source.root,
                                   source.class_names)
        settings[_CLASS_GROUPS] = list(groups.class_groups)
        facts.update({
            data_facts.GROUP_NAMES: list(groups.group_names),
            data_facts.CLASS_GROUPS: list(groups.class_groups)
        })
    return {
        **exec_properties,
        'input_base':
            source.root,
        'span':
            span,
        'input_config':
            proto_utils.proto_to_json(example_gen_pb2.Input(splits=splits)),
        # Our splits are carved in GenerateExamplesByBeam, not by TFX.
        'output_config':
            proto_utils.proto_to_json(example_gen_pb2.Output()),
        'custom_config':
            proto_utils.proto_to_json(settings_to_custom_config(settings))
    }, facts


def _settings(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    config = example_gen_pb2.CustomConfig()
    json_format.Parse(exec_properties['custom_config'], config)
    struct = struct_pb2.Struct()
    config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def _output_splits(settings: Dict[str, Any],
                   input_splits: List[str]) -> List[str]:
    carved = [
        s for s in (names.EVAL, names.TEST)
        if s not in input_splits and settings.get(f'{s}_percent')
    ]
    return list(input_splits) + carved


def _bucket(record: bytes) -> int:
    return int(hashlib.sha256(record).hexdigest(), 16) % 100


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Reads this project's raw formats into tf.Example splits."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _read_split

    def GenerateExamplesByBeam(
            self, pipeline: beam.Pipeline,
            exec_properties: Dict[str,
                                  Any]) -> Dict[str, beam.pvalue.PCollection]:
        splits = super().GenerateExamplesByBeam(pipeline, exec_properties)
        settings = _settings(exec_properties)
        split_names = _output_splits(settings, list(splits))
        # TFX names the output splits after the input ones; ours add carved
        # splits, so the artifact must know them before Do writes them.
        self._examples.split_names = artifact_utils.encode_split_names(
            split_names)
        carved = split_names[len(splits):]
        if not carved:
            return splits
        # Buckets [0, test%) go to test, the next eval% to eval, rest train.
        bounds, upper = [], 0
        for split in (names.TEST, names.EVAL):
            upper += (settings.get(f'{split}_percent', 0)
                      if split in carved else 0)
            bounds.append((split, upper))

        def partition(record: bytes, _) -> int:
            bucket = _bucket(record)
            for index, (_, bound) in enumerate(bounds):
                if bucket < bound:
                    return index
            return len(bounds)

        parts = splits[names.TRAIN] | 'CarveSplits' >> beam.Partition(
            partition,
            len(bounds) + 1)
        splits[names.TRAIN] = parts[len(bounds)]
        for index, (split, _) in enumerate(bounds):
            if split in carved:
                splits[split] = parts[index]
        return splits

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        bad_dir = os.path.join(self._get_tmp_dir(), 'bad_records')
        os.makedirs(bad_dir, exist_ok=True)
        exec_properties, facts = _learn_layout(exec_properties)
        exec_properties = {**exec_properties, _BAD_RECORDS_DIR_KEY: bad_dir}
        self._examples = artifact_utils.get_single_instance(
            output_dict['examples'])
        super().Do(input_dict, output_dict, exec_properties)
        data_facts.write(self._examples.uri, facts)
        self._examples.span = facts[data_facts.SPAN]
        # TFX's driver also wrote a `span` custom property, from the
        # compile-time fingerprint patterns that have no {SPAN}: always 0.
        self._examples.set_int_custom_property('span', facts[data_facts.SPAN])
        # Shown with the artifact in ML Metadata and the KFP UI; the file
        # is what Transform reads.
        self._examples.set_string_custom_property(data_facts.FORMAT,
                                                  facts[data_facts.FORMAT])
        self._examples.set_int_custom_property(
            'num_classes', len(facts[data_facts.CLASS_NAMES]))
        if facts[data_facts.NUM_CHANNELS] is not None:
            self._examples.set_int_custom_property(
                data_facts.NUM_CHANNELS, facts[data_facts.NUM_CHANNELS])

        settings = _settings(exec_properties)
        bad = _read_bad_records(bad_dir)
        if bad and settings.get('on_bad_record') != ON_BAD_RECORD_SKIP:
            first = bad[0]
            more = (f' (and {len(bad) - 1} more bad records)'
                    if len(bad) > 1 else '')
            raise InputDataError(first['path'], first['reason'] + more,
                                 first.get('line'))
        for record in bad[:_BAD_RECORDS_SHOWN]:
            logging.warning('Skipped bad record %s: %s', record['path'],
                            record['reason'])
        self._examples.set_int_custom_property(BAD_RECORDS_PROPERTY, len(bad))


def _span_window(split_pattern: str, exec_properties: Dict[str, Any],
                 window: int) -> List[str]:
    """The split's pattern for each of the newest `window` spans.

    TFX resolves `{SPAN}` to the newest span only; older spans of a rolling
    window are read by rewriting its folder name.
    """
    span = exec_properties.get('span')
    newest = f'{names.SPAN_DIR_PREFIX}{span}/'
    if window <= 1 or span is None or not split_pattern.startswith(newest):
        return [split_pattern]
    rest = split_pattern[len(newest):]
    return [
        f'{names.SPAN_DIR_PREFIX}{s}/{rest}'
        for s in data_source.span_numbers(exec_properties['input_base'])
        if int(span) - window < s <= int(span)
    ]


def _read_bad_records(bad_dir: str) -> List[Dict[str, Any]]:
    records = []
    for path in sorted(glob.glob(os.path.join(bad_dir, '*'))):
        with open(path, encoding='utf-8') as f:
            records.extend(json.loads(line) for line in f if line.strip())
    # One fault can surface once per work item (each chunk of a truncated IDX
    # file reports it): count distinct faults, not reports.
    distinct = {(r['path'], r.get('line'), r['reason']): r for r in records}
    return sorted(distinct.values(),
                  key=lambda r: (r['path'], r.get('line') or 0))


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _read_split(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                split_pattern: str) -> beam.pvalue.PCollection:
    settings = _settings(exec_properties)
    patterns = [
        os.path.join(exec_properties['input_base'], p)
        for p in _span_window(split_pattern, exec_properties,
                              int(settings.get('span_window') or 1))
    ]
    examples, bad = _READERS[settings['format']](pipeline, settings, patterns)
    if settings.get(_CLASS_GROUPS):
        examples = examples | 'AddGroupLabel' >> beam.Map(
            _with_group_label, [int(g) for g in settings[_CLASS_GROUPS]])
    name = hashlib.sha1(split_pattern.encode()).hexdigest()[:8]
    _ = (bad | 'BadToJson' >> beam.Map(json.dumps) |
         'WriteBad' >> beam.io.WriteToText(
             os.path.join(exec_properties[_BAD_RECORDS_DIR_KEY], name)))
    return examples


def _with_group_label(record: bytes, class_groups: List[int]) -> bytes:
    """The serialized example with its class's group label added."""
    example = example_pb2.Example.FromString(record)
    label = example.features.feature[names.LABEL_KEY].int64_list.value[0]
    example.features.feature[names.GROUP_LABEL_KEY].int64_list.value.append(
        class_groups[label])
    return example.SerializeToString(deterministic=True)
