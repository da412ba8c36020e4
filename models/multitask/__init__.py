"""The multi-task family: a shared convnet trunk, a head per task."""
