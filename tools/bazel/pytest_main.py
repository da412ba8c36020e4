"""Runs one test file under pytest, as Bazel's `py_test` main.

Bazel runs a py_test as `python pytest_main.py`; the test file comes as the
first argument (`args` in tests/BUILD). pytest finds the repository's
pytest.ini and conftest.py files in the runfiles tree.
"""

import os
import sys

import pytest


def main() -> int:
    """Runs pytest on the test file named in argv[1]; returns its exit code."""
    test_file = sys.argv[1]
    # Results and caches go to Bazel's per-test scratch space.
    scratch = os.environ.get('TEST_TMPDIR')
    args = [test_file, '-q', '-p', 'no:cacheprovider', *sys.argv[2:]]
    if scratch:
        args += ['--basetemp', os.path.join(scratch, 'pytest')]
    return pytest.main(args)


if __name__ == '__main__':
    sys.exit(main())
