"""Readers and writers of raw data files: images, `.ts`, long CSV.

Plain numpy and Pillow code (no TensorFlow, TFX or Beam): ExampleGen
(components/example_gen/) converts files with it, and the serving client's
command line (serving/cli.py) reads a file into a request with it. Bad
input raises errors.InputDataError, naming the file, the line and the fault.
"""
