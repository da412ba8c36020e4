"""ServingCheck: TFX's InfraValidator job, without Docker (component.py)."""
