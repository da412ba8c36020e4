"""RunReport: the report of a compiled (Kubeflow) run, as a component."""
