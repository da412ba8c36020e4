"""`project_venv`: the project's virtualenv as Bazel's Python toolchain.

The interpreter is `<clone>/.venv/bin/python` (`make setup` makes it), found
where the clone is, so a clone anywhere works. Bazel does not see the venv's
packages; the repository copies requirements.txt and
requirements-nodeps.txt, reading them by label, so that Bazel re-runs it when
either changes, and the copies (`@project_venv//:lock`) are data of every
test: a changed lock invalidates every cached test result.

It also writes `checkout.bzl`, the git environment of the checkout for the
tests that ask git about it (tests/BUILD): Bazel runs tests in a runfiles
tree, which is not a git checkout.
"""

_BUILD = """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3",
    interpreter_path = "{python}",
    python_version = "PY3",
    # Bazel's strict action environment has no `python` on PATH.
    stub_shebang = "#!{python}",
)

# Every test's data (tools/bazel/pytest.bzl): the lock's copies.
filegroup(
    name = "lock",
    srcs = ["requirements.txt", "requirements-nodeps.txt"],
    visibility = ["//visibility:public"],
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "python_toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

_CHECKOUT_BZL = """
# git pointed at the checkout {root} (tools/bazel/venv.bzl).
CHECKOUT_GIT_ENV = {{
    "GIT_DIR": "{root}/.git",
    "GIT_WORK_TREE": "{root}",
}}
"""

def _project_venv_impl(ctx):
    root = ctx.path(Label("//:WORKSPACE")).dirname
    python = root.get_child(".venv").get_child("bin").get_child("python")
    if not python.exists:
        fail("%s is missing: run `make setup` first" % python)
    for name in ["requirements.txt", "requirements-nodeps.txt"]:
        ctx.file(name, ctx.read(Label("//:" + name)), executable = False)
    ctx.file("BUILD", _BUILD.format(python = python), executable = False)
    ctx.file(
        "checkout.bzl",
        _CHECKOUT_BZL.format(root = root),
        executable = False,
    )

project_venv = repository_rule(
    implementation = _project_venv_impl,
    local = True,
    doc = "The project's .venv as the Python toolchain.",
)
