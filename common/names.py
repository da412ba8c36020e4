"""Names the layers pass between them: kinds, splits, files, config keys.

One definition of each: ExampleGen writes what the Trainer reads, the
pipeline writes what a Tuner reads, the Trainer writes what the report
reads.
"""

# The kinds of raw data a model family reads (pipeline/profiles.py MODELS).
IMAGES = 'images'
SEQUENCES = 'sequences'
# Clips: short videos, frames x height x width x channels (models/convnet3d/).
CLIPS = 'clips'
# Images whose labels, if any, are not read: a folder of image files, or any
# labelled image set (pretraining, models/convnet/pretraining.py).
UNLABELLED_IMAGES = 'unlabelled_images'

# Example splits: ExampleGen writes them; Transform analyzes train; the
# Trainer trains on train and chooses epochs on eval; the Evaluator and the
# serving check use test.
TRAIN = 'train'
EVAL = 'eval'
TEST = 'test'

# Raw features of the tf.Examples ExampleGen writes (models/features.py
# builds them; each preprocessing_fn reads them).
LABEL_KEY = 'label'
# Multi-task data (models/multitask/): each example's coarser group, an
# index into the data's group names (formats/class_groups.py).
GROUP_LABEL_KEY = 'group_label'
IMAGE_KEY = 'image'
SEQUENCE_KEY = 'sequence'
# A clip's values, frames x height x width x channels flattened row-major;
# the data set's one clip shape is a data fact (models/data_facts.py).
CLIP_KEY = 'clip'
LENGTH_KEY = 'length'

# Debian's dataset-fashion-mnist package (`make data`): the image families'
# default data.
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
# The clip family's default data: Fashion-MNIST items moving across a
# canvas, written there by `python -m bench.moving_clips` (nothing
# downloads).
MOVING_CLIPS_DIR = '~/.cache/tfx-clips/moving-fashion-mnist'

# The Beam counters, one per process id, that ExampleGen's readers count the
# items they read under: which SDK worker processes did the work
# (pipeline/engine_jobs.py reads them from an engine's jobs).
WORKER_PID_COUNTERS = 'sdk_worker_pid'

# Files.
# What the Trainer did, as JSON, in its model run directory.
TRAINING_REPORT = 'training.json'
# What ExampleGen learnt from the data (models/data_facts.py), beside its
# output and copied into the transform graph.
DATA_FACTS_FILE = 'data_facts.json'
# Class names of a TFRecord data set, beside its files.
CLASS_NAMES_FILE = 'class_names.txt'
# Class name -> group name of a multi-task data set, at its root
# (formats/class_groups.py).
GROUPS_FILE = 'groups.json'
# Spans of raw data: folders `span-0`, `span-1`, ...
SPAN_DIR_PREFIX = 'span-'
SPAN_DIR_PATTERN = SPAN_DIR_PREFIX + '{SPAN}'
# What the data gate writes per split (TFDV's anomalies).
ANOMALIES_FILE = 'SchemaDiff.pb'

# The metric a model is blessed by and the report shows.
ACCURACY_METRIC = 'accuracy'

# Entries of the Trainer's and Tuner's custom_config the pipeline writes.
# When a Tuner chooses between model families (models/tuning.py, the
# `tune_families` setting): the param naming the family a trial or the
# Trainer trains, and the entry in which the pipeline hands down the other
# families' own params (their profile of the run's profile name), name ->
# params.
FAMILY = 'family'
FAMILY_PARAMS = 'family_params'
# The settings the user gave (`--set`), which a Tuner's search holds at
# their values.
HELD_SETTINGS = 'tune_held'
