"""Families, the shared training loop, the Trainer and Tuner entry points."""
