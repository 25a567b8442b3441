"""`tf_train` under `tf.distribute`: MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on 127.0.0.1 give one device's losses to float rounding, and their checkpoints resume exactly.
Each strategy needs a fresh process (logical devices and collective ops are set before TensorFlow's first
operation), so the three processes start together once, in a module fixture."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnn_tutorial.keras_layers import free_port, tf_config
from rnn_tutorial.tf_setup import configure_tensorflow
from rnn_tutorial.tf_train import make_tf_trainer

configure_tensorflow(deterministic=True)

ROOT = Path(__file__).resolve().parent.parent
TEXT = np.random.default_rng(0).integers(0, 11, 700)
SETTINGS = dict(units=8, cell="lstm", layers=2, seed=0, lr=1e-2, batch_size=4, seq_len=20, eval_every=0)

CHILD = r"""
import json, os, sys
mode, ckpt, dropout = sys.argv[1], sys.argv[2], float(sys.argv[3])
from rnn_tutorial.tf_setup import import_tensorflow, quiet_stderr
tf, _ = import_tensorflow()
if mode == "mirrored":
    with quiet_stderr(): cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from rnn_tutorial.tf_train import make_strategy, make_tf_trainer
strategy = make_strategy(mode)  # before TensorFlow's first operation
import numpy as np
text = np.random.default_rng(0).integers(0, 11, 700)
settings = json.loads(sys.argv[4])
run = make_tf_trainer(11, text[:600], text[600:], dropout=dropout, strategy=strategy, **settings)
straight = json.loads(json.dumps(run.fit(3, checkpoint=ckpt).fit(6).log))  # the chief writes at step 3, goes on
run.load_checkpoint(ckpt).fit(6)  # back to step 3: every variable, the state, the data position and the log
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "chief": run.is_chief,
                              "straight": straight, "resumed": run.log}), flush=True)
"""


def _start(mode, ckpt, dropout, env):
    args = [sys.executable, "-c", CHILD, mode, str(ckpt), str(dropout), json.dumps(SETTINGS)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The mirrored run (no dropout) and the two workers' runs (dropout 0.25), started together; their logs, each run
    straight to step 6 and again from its step-3 checkpoint"""
    d = tmp_path_factory.mktemp("distribute")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("TF_CONFIG", None)
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    (d / "mirrored").mkdir(), (d / "workers").mkdir()
    procs = {"mirrored": _start("mirrored", d / "mirrored" / "run.npz", 0.0, env)}
    for i in range(2):
        procs[f"worker{i}"] = _start("multi-worker", d / "workers" / "run.npz", 0.25,
                                     {**env, "TF_CONFIG": tf_config(workers, i)})
    out, t0 = {}, time.monotonic()
    try:
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=max(1.0, 240 - (time.monotonic() - t0)))
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            assert p.returncode == 0 and lines, f"{name} failed ({p.returncode}): {stderr[-3000:]}"
            out[name] = json.loads(lines[-1][len("RESULT "):])
    finally:
        for p in procs.values():
            if p.poll() is None: p.kill(), p.wait()
    return out, d


def _losses(log): return np.array([row[1] for row in log["train"]])


def test_mirrored_two_logical_cpus_gives_one_devices_losses_and_resumes_exactly(runs):
    out, d = runs
    m = out["mirrored"]
    assert m["replicas"] == 2 and m["chief"]
    one = make_tf_trainer(11, TEXT[:600], TEXT[600:], **SETTINGS).fit(6)
    one_log = json.loads(json.dumps(one.log))
    np.testing.assert_allclose(_losses(m["straight"]), _losses(one_log), rtol=1e-5)
    np.testing.assert_allclose([r[2] for r in m["straight"]["train"]], [r[2] for r in one_log["train"]], rtol=1e-4)
    assert m["resumed"] == m["straight"]  # a checkpoint written under the strategy resumes exactly under it
    # the file is one device's: it resumes on one device, and goes on as the one-device run to float rounding
    one.load_checkpoint(d / "mirrored" / "run.npz")
    assert one.step == 3 and one.log["train"] == m["straight"]["train"][:3]
    np.testing.assert_allclose(_losses(one.fit(6).log), _losses(one_log), rtol=1e-5)


def test_two_workers_agree_resume_exactly_with_dropout_and_only_the_chief_writes(runs):
    out, d = runs
    w0, w1 = out["worker0"], out["worker1"]
    assert w0["replicas"] == w1["replicas"] == 2
    assert (w0["chief"], w1["chief"]) == (True, False)
    assert w0["straight"] == w1["straight"]  # every worker holds the same numbers
    assert w0["resumed"] == w0["straight"] and w1["resumed"] == w1["straight"]  # the dropout masks come back too
    assert sorted(p.name for p in (d / "workers").iterdir()) == ["run.npz"]  # one file, by the chief
    here = make_tf_trainer(11, TEXT[:600], TEXT[600:], dropout=0.25, **SETTINGS).load_checkpoint(
        d / "workers" / "run.npz")
    assert here.step == 3 and here.log["train"] == w0["straight"]["train"][:3]
    assert np.isfinite(_losses(here.fit(5).log)).all() and here.step == 5  # it trains on, on one device
