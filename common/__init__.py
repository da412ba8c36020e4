"""Names and settings every layer shares: the project's ground floor.

Imports the standard library only (no TensorFlow, TFX or Beam), so the
pipeline's command line, the serving client and the models all read one
definition of each name without loading what another layer needs.
"""
