"""The convnet family: filter banks, and a multi-scale trunk."""
