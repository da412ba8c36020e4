"""The clip family: 3-D convolutions over frames and space."""
