"""Beam reader for clip data: class folders of clips (formats/clip_formats)."""

import hashlib
from typing import Any, Dict, Iterator, List

import apache_beam as beam

from components.example_gen import reading
from formats import clip_formats
from models import features


def _stable_order(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def read_clip_folders(pipeline: beam.Pipeline, settings: Dict[str, Any],
                      patterns: List[str]):
    """Reads `<class name>/<clip>` paths matching `patterns`.

    Each clip is read whole and checked against the data set's clip shape
    (`clip_shape`, learned from its first training clip).
    """
    class_names = settings['class_names']
    shape = tuple(int(d) for d in settings['clip_shape'])
    clips = [f for f in reading.glob_files(patterns) if clip_formats.is_clip(f)]
    limit = reading.first_n(settings)
    if limit:
        # A hash order, so that a limited read still spans every class.
        clips = sorted(sorted(clips, key=_stable_order)[:limit])

    def read_clip(path: str) -> Iterator[bytes]:
        class_name = path.replace('\\', '/').rstrip('/').split('/')[-2]
        label = reading.label_index(class_names, class_name, path)
        values = clip_formats.read_clip(path)
        clip_formats.check_shape(path, values.shape, shape)
        yield features.clip_example(values, label)

    return reading.read_items(pipeline, clips, read_clip)
