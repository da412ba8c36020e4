"""`pytest_test`: a py_test that runs one test file under pytest."""

def pytest_test(name, src, deps = [], data = [], **kwargs):
    """A py_test target `name` running the pytest file `src`.

    Args:
      name: The target's name.
      src: The test file.
      deps: py_library targets the test imports.
      data: Files the test reads.
      **kwargs: Passed on to py_test (size, timeout, tags, ...).
    """
    native.py_test(
        name = name,
        srcs = [src, "//tools/bazel:pytest_main.py"],
        main = "//tools/bazel:pytest_main.py",
        args = ["$(location %s)" % src],
        deps = deps,
        # A changed requirements.txt invalidates cached results (venv.bzl).
        data = data + ["//:pytest.ini", "@project_venv//:lock"],
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
