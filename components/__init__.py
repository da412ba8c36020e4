"""The custom TFX components and their executors."""
