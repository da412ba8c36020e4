"""Our model server on TF Serving's APIs (docs/serving.md)."""
