"""Importing a module does no work beyond imports, and NumPy code never needs TensorFlow.

Each check runs in a fresh Python, since this test process has long imported TensorFlow.
"""
import subprocess
import sys

import pytest

# Modules whose content is NumPy (models, decoders, metrics, the command-line parser, the benchmark's driver):
# importing them must leave TensorFlow out of sys.modules. Their few TensorFlow functions import it when called.
TF_FREE = ["rnn_tutorial.checks", "rnn_tutorial.persist", "rnn_tutorial.tf_setup", "rnn_tutorial.data",
           "rnn_tutorial.numpy_rnn", "rnn_tutorial.numpy_gated", "rnn_tutorial.numpy_train", "rnn_tutorial.diagnostics",
           "rnn_tutorial.bench", "rnn_tutorial.cli", "rnn_tutorial.apps.generation", "rnn_tutorial.apps.classification",
           "rnn_tutorial.apps.tagging", "rnn_tutorial.apps.speech"]
# Modules that define Keras classes import TensorFlow, quietly, and do nothing else at import.
WITH_TF = ["rnn_tutorial.tf_rnn", "rnn_tutorial.keras_layers", "rnn_tutorial.tf_train", "rnn_tutorial.apps.translation",
           "rnn_tutorial.apps.forecasting"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", TF_FREE)
def test_numpy_modules_import_without_tensorflow(module):
    run = _python(f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('tensorflow', 'keras')))")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]", f"importing {module} imported {run.stdout.strip()[:300]}"


@pytest.mark.parametrize("module", WITH_TF)
def test_tensorflow_modules_import_quietly_without_setting_up(module):
    "No output on either stream, and no device set up: GPU memory growth and determinism are configure_tensorflow's."
    run = _python(f"import {module}, tensorflow as tf; "
                  "print(tf.config.experimental.is_op_determinism_enabled())")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "False"
    assert run.stderr == "", f"importing {module} wrote to stderr:\n{run.stderr[:2000]}"
    exports = _python(f"import {module} as m; print(sorted(set(getattr(m, '__all__', [])) & {{'tf', 'keras'}}))")
    assert exports.stdout.strip() == "[]", f"{module} exports {exports.stdout.strip()} in __all__"
