"""The one error type bad input data raises, naming the file and the fault."""

from typing import Optional


class InputDataError(ValueError):
    """Input data that cannot be read: names the file, the line if any, and why.

    Attributes:
        path: The file (or folder) at fault.
        reason: What is wrong with it, in words a user can act on.
        line: 1-based line number for text formats, else None.
    """

    def __init__(self, path: str, reason: str, line: Optional[int] = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f'{self.path}:{line}' if line is not None else self.path
        super().__init__(f'{where}: {reason}')

    def __reduce__(self):
        # Keeps the error picklable, so it crosses Beam worker processes intact.
        return (InputDataError, (self.path, self.reason, self.line))
