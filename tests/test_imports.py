"""Importing a module does no work beyond imports, and NumPy code never needs TensorFlow.

Each check runs in a fresh Python, since this test process has long imported TensorFlow.
"""
import subprocess
import sys

# Modules whose content is NumPy (models, decoders, metrics, the command-line parser, the benchmark's driver):
# importing them must leave TensorFlow out of sys.modules. Their few TensorFlow functions import it when called.
TF_FREE = ["rnn_tutorial.checks", "rnn_tutorial.persist", "rnn_tutorial.tf_setup", "rnn_tutorial.data",
           "rnn_tutorial.numpy_rnn", "rnn_tutorial.numpy_gated", "rnn_tutorial.numpy_train", "rnn_tutorial.diagnostics",
           "rnn_tutorial.bench", "rnn_tutorial.cli", "rnn_tutorial.apps.generation", "rnn_tutorial.apps.classification",
           "rnn_tutorial.apps.tagging", "rnn_tutorial.apps.speech", "rnn_tutorial.linear_rnn", "rnn_tutorial.neurons"]
# Modules that define Keras classes import TensorFlow, quietly, and do nothing else at import.
WITH_TF = ["rnn_tutorial.tf_rnn", "rnn_tutorial.keras_layers", "rnn_tutorial.tf_train", "rnn_tutorial.apps.translation",
           "rnn_tutorial.apps.forecasting"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_numpy_modules_import_without_tensorflow():
    "Imported one after another in one fresh process; the first module that brings TensorFlow in is named."
    code = ("import importlib, sys\n"
            f"for name in {TF_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "    if heavy: sys.exit(f'importing {name} imported {heavy[:5]}')\n")
    run = _python(code)
    assert run.returncode == 0, run.stderr[-3000:]


def test_tensorflow_modules_import_quietly_without_setting_up():
    "No output on either stream, no op determinism (configure_tensorflow's job), and no `tf`/`keras` in `__all__`."
    code = ("import importlib\n"
            f"for name in {WITH_TF!r}:\n"
            "    m = importlib.import_module(name)\n"
            "    assert not set(getattr(m, '__all__', [])) & {'tf', 'keras'}, f'{name} exports tf or keras'\n"
            "from tensorflow.python.framework import config  # TF has no public getter for determinism\n"
            "assert not config.is_op_determinism_enabled(), 'an import turned op determinism on'\n")
    run = _python(code)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == "" and run.stderr == "", f"importing wrote output:\n{run.stdout[:1000]}{run.stderr[:2000]}"
