"""The error data that breaks its schema raises, stopping a run."""


class DataValidationError(ValueError):
    """Data that reads fine but breaks its schema: stops a run before training.

    Attributes:
        problems: (split, feature, description) for each anomaly found.
    """

    def __init__(self, problems):
        self.problems = [tuple(p) for p in problems]
        # One line, as every error the command line reports.
        found = [
            f'{split}: feature {feature!r}: {description}'
            for split, feature, description in self.problems
        ]
        super().__init__('data validation found anomalies: ' + '; '.join(found))

    def __reduce__(self):
        return (DataValidationError, (self.problems,))
