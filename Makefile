# One-command set-up, demo, tests and benchmarks. See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOME_DIR ?= tfx_home
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONWARNINGS := ignore::FutureWarning

# Python 3.10: the first python3.10 that runs, from PATH or pyenv's versions
# (a pyenv shim on PATH may not run), else uv's own discovery.
PYTHON310 ?= $(shell for p in $$(command -v python3.10) \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10 2>/dev/null); do \
	"$$p" -c '' 2>/dev/null && echo "$$p" && break; done)
ifeq ($(PYTHON310),)
PYTHON310 := 3.10
endif
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# The headless browser the tests open the run reports in.
CHROMIUM := /usr/bin/chromium
# The HTTP load generator of the serving benchmark (bench/serving_front_end.py).
WRK := /usr/bin/wrk

.PHONY: setup data browser wrk engines demo lint format format-check test \
	bench bazel bazel-test clean image image-test engine-test settings-doc

# The Kubeflow image, tagged as `compile` expects by default.
IMAGE ?= $(shell $(PY) -c 'from pipeline import configs; print(configs.default_image())')

setup: $(VENV)/.installed data browser wrk engines

# --compile-bytecode: the installed packages' .pyc files, written once here.
# Python writes none itself where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines and in the image), and then compiles TensorFlow's, TFX's and
# Beam's sources again in every process it starts: `import tensorflow` took
# 13 CPU-seconds instead of 5.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	command -v uv >/dev/null || python3 -m pip install --quiet uv
	uv venv --allow-existing --python $(PYTHON310) $(VENV)
	uv pip install --python $(PY) --compile-bytecode -r requirements.txt
	uv pip install --python $(PY) --no-deps --compile-bytecode \
	    -r requirements-nodeps.txt
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

browser: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium

wrk: $(WRK)

$(WRK):
	apt-get update -qq && apt-get install -y -qq wrk

# Flink and Spark for the Beam steps (docs/engines.md): a Flink 1.19
# distribution from PyPI's apache-flink wheel (bin/, conf/) and
# apache-flink-libraries sdist (lib/, opt/); Spark 3.5.5 from the pyspark
# sdist's deps/; Beam's Flink and Spark job servers assembled by Maven from
# the poms under deploy/engines/. Cached outside the checkout, fetched once;
# pipeline/engines.py names the same folder and versions.
ENGINES_DIR ?= $(or $(TFX_ENGINES_DIR),$(HOME)/.cache/tfx-engines)
FLINK_VERSION := 1.19.0
SPARK_VERSION := 3.5.5
PIP_DOWNLOAD = $(shell $(PY) -m pip --version >/dev/null 2>&1 && \
	echo '$(PY) -m pip' || echo 'uvx pip') download --no-deps --quiet \
	-d $(ENGINES_DIR)/downloads
FLINK_HOME := $(ENGINES_DIR)/flink-$(FLINK_VERSION)
SPARK_HOME := $(ENGINES_DIR)/spark-$(SPARK_VERSION)

# A job server's stamp names its pom's hash: a fresh clone (newer files,
# the same pom) finds it fetched; a changed pom fetches again.
pom_stamp = $(ENGINES_DIR)/$(1)-job-server/.fetched-$(shell sha256sum \
	deploy/engines/$(1)-job-server/pom.xml | cut -c1-12)

engines: $(FLINK_HOME)/.fetched $(SPARK_HOME)/.fetched \
	$(call pom_stamp,flink) $(call pom_stamp,spark)

$(FLINK_HOME)/.fetched: | $(VENV)/.installed
	$(PIP_DOWNLOAD) apache-flink==$(FLINK_VERSION) \
	    apache-flink-libraries==$(FLINK_VERSION)
	rm -rf $(FLINK_HOME) $(FLINK_HOME).tmp && mkdir -p $(FLINK_HOME).tmp
	tar xzf $(ENGINES_DIR)/downloads/apache-flink-libraries-$(FLINK_VERSION).tar.gz \
	    -C $(FLINK_HOME).tmp --strip-components=2 \
	    apache-flink-libraries-$(FLINK_VERSION)/deps
	cd $(FLINK_HOME).tmp && unzip -q -o \
	    $(ENGINES_DIR)/downloads/apache_flink-$(FLINK_VERSION)-*.whl \
	    'pyflink/bin/*' 'pyflink/conf/*' && cp -r pyflink/bin pyflink/conf . \
	    && rm -rf pyflink
	touch $(FLINK_HOME).tmp/.fetched && mv $(FLINK_HOME).tmp $(FLINK_HOME)

$(SPARK_HOME)/.fetched: | $(VENV)/.installed
	$(PIP_DOWNLOAD) --no-build-isolation pyspark==$(SPARK_VERSION) || \
	    $(PIP_DOWNLOAD) pyspark==$(SPARK_VERSION)
	rm -rf $(SPARK_HOME) $(SPARK_HOME).tmp && mkdir -p $(SPARK_HOME).tmp
	tar xzf $(ENGINES_DIR)/downloads/pyspark-$(SPARK_VERSION).tar.gz \
	    -C $(SPARK_HOME).tmp --strip-components=2 pyspark-$(SPARK_VERSION)/deps
	touch $(SPARK_HOME).tmp/.fetched && mv $(SPARK_HOME).tmp $(SPARK_HOME)

fetch_job_server = rm -rf $(@D) && mvn -q -f \
	deploy/engines/$(1)-job-server/pom.xml dependency:copy-dependencies \
	-DincludeScope=runtime -DoutputDirectory=$(@D) && touch $@

$(call pom_stamp,flink):
	$(call fetch_job_server,flink)

$(call pom_stamp,spark):
	$(call fetch_job_server,spark)

demo: setup
	$(PY) -m pipeline run --model convnet --profile full --home $(HOME_DIR)
	$(PY) -m pipeline run --model rnn --profile full --home $(HOME_DIR)
	$(PY) -m pipeline demo --home $(HOME_DIR)

# ruff (style, imports, docstrings), import-linter (layers and no circles:
# pyproject.toml), the generated settings page, yapf.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pipeline.settings_doc --check docs/settings.md
	$(VENV)/bin/yapf --diff --parallel $$(git ls-files '*.py') >/dev/null || \
	    { echo 'not formatted: run make format' >&2; exit 1; }

# docs/settings.md from the settings table (common/settings.py) and the
# families' profiles (pipeline/configs.py); `lint` fails when it is stale.
settings-doc: setup
	$(PY) -m pipeline.settings_doc docs/settings.md

# yapf, Google style (pyproject.toml), over the tracked Python files; `lint`
# fails on a file it would change.
format: setup
	$(VENV)/bin/yapf --in-place --parallel $$(git ls-files '*.py')

format-check: setup
	$(VENV)/bin/yapf --diff --parallel $$(git ls-files '*.py')

# In a random order (pytest-randomly), a new one each time, on two test
# workers (pytest-xdist; most tests wait on one pipeline or server process
# at a time, one core's work): each module and its module-scoped runs stay
# on one worker (--dist loadfile), which takes the next module in the
# collection's order (--no-loadscope-reorder: not xdist's most-tests-first,
# which left the heaviest modules, with few tests, to the end), and the
# heavy modules come first in it (tests/conftest.py). The run's last line
# names its seed; `make test SEED=N` runs that order again in one process,
# where each worker's order is a part of it (WORKERS=2 keeps two workers).
WORKERS ?= $(if $(SEED),0,2)
test: setup lint
	$(PY) -m pytest tests -q -p no:cacheprovider -n $(WORKERS) \
	    $(if $(filter-out 0,$(WORKERS)),--dist loadfile --no-loadscope-reorder) \
	    $(if $(SEED),--randomly-seed=$(SEED))

bench: setup
	$(PY) -m bench

# Bazel 4.2 from Debian, offline: the WORKSPACE points at the platforms and
# rules_java these packages install. `make test` stays the one test command
# CI runs.
bazel:
	test -x /usr/bin/bazel -a -f /usr/share/bazel/platforms/WORKSPACE \
	    -a -f /usr/share/bazel/rules/java/WORKSPACE || { apt-get update -qq && \
	    apt-get install -y -qq bazel-bootstrap bazel-platforms bazel-rules-java; }

bazel-test: setup bazel
	bazel test //...

# With a Docker engine, `docker build`; without one, podman from a local
# stand-in for the base image (tools/image/, docs/deployment.md).
image: setup
	tools/image/build.sh $(IMAGE) $(PYTHON310)

# Both pipelines' Beam steps on local Flink and Spark clusters against the
# in-process run (docs/engines.md); minutes each, so apart from `make test`.
engine-test: setup
	ENGINE_TEST=1 $(PY) -m pytest tests/test_engines.py -q -p no:cacheprovider

# The image built, then run (tests/test_image.py): slow, so apart from
# `make test` and .ci/run (about 30 minutes when the requirements change).
image-test: image
	IMAGE=$(IMAGE) IMAGE_TEST=1 $(PY) -m pytest tests/test_image.py -q \
	    -p no:cacheprovider

clean:
	rm -rf $(HOME_DIR) bench/results
