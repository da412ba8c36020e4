"""The pipeline: configuration, create_pipeline(), runners, report."""
