"""Tests of the `rnn-tutorial` command: every command run as a subprocess on small data, bad input, interrupted and
resumed runs, memory."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnn_tutorial.data import language_reference

CLI = [sys.executable, "-m", "rnn_tutorial.cli"]
ENV = {**os.environ, "COLUMNS": "100"}
TINY = ["--cell", "lstm", "--units", "32", "--batch-size", "8", "--seq-len", "32", "--eval-every", "20"]


def run(args, cwd, expect=0, timeout=600):
    "Run the command in a subprocess and check its exit status"
    p = subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == expect, (f"{args}: exit status {p.returncode}, expected {expect}\n"
                                    f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}")
    return p


def snapshot(d: Path) -> list:
    "Every file under `d` with its size and modification time"
    return sorted((str(f.relative_to(d)), f.stat().st_size, f.stat().st_mtime_ns) for f in d.rglob("*"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "text.txt").write_text(language_reference()[:120_000], encoding="utf-8")
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (d / "a_dir").mkdir()
    return d


@pytest.fixture(scope="module")
def numpy_model(work):
    "A tiny NumPy model in work/np, and broken copies of it"
    run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "60", "--out", "np"], work)
    for name in ("truncated", "oldversion", "noweights"): shutil.copytree(work / "np", work / name)
    w = work / "truncated" / "weights.npz"
    w.write_bytes(w.read_bytes()[:200])
    cfg = json.loads((work / "oldversion" / "config.json").read_text())
    (work / "oldversion" / "config.json").write_text(json.dumps({**cfg, "version": 99, "package_version": "9.9"}))
    (work / "noweights" / "weights.npz").unlink()
    return work / "np"


@pytest.mark.parametrize("command", [None, "demo", "train", "generate", "evaluate", "info"])
def test_help(work, command):
    p = run([command, "--help"] if command else ["--help"], work)
    assert p.stdout.startswith(f"usage: rnn-tutorial{' ' + command if command else ''}")
    if command in ("demo", "train", "generate", "evaluate"): assert "(default: " in p.stdout


def test_version(work):
    from rnn_tutorial import __version__
    assert run(["--version"], work).stdout.strip() == f"rnn-tutorial {__version__}"


def test_bench_forwarding(work):
    p = run(["bench", "--help"], work)
    assert "usage:" in p.stdout and "--json" in p.stdout


def test_train_generate_evaluate(work, numpy_model):
    m = numpy_model
    files = {"config.json", "vocab.json", "weights.npz", "checkpoint.npz", "log.jsonl", "summary.json", "loss.png"}
    assert files <= {f.name for f in m.iterdir()}
    cfg = json.loads((m / "config.json").read_text())
    assert (cfg["backend"], cfg["cell"], cfg["units"], cfg["steps_done"]) == ("numpy", "lstm", 32, 60)
    log = [json.loads(line) for line in (m / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in log) == 60 and [r["step"] for r in log if "valid_loss" in r] == [20, 40, 60]
    a = run(["generate", "--model", "np", "--prime", "The ", "--length", "50", "--seed", "3"], work).stdout
    b = run(["generate", "--model", "np", "--prime", "The ", "--length", "50", "--seed", "3"], work).stdout
    assert a == b and a.startswith("The ") and len(a.rstrip("\n")) >= 50
    beam = run(["generate", "--model", "np", "--prime", "The ", "--length", "30", "--beam", "4"], work).stdout
    assert beam == run(["generate", "--model", "np", "--prime", "The ", "--length", "30", "--beam", "4"], work).stdout
    assert run(["generate", "--model", "np", "--length", "30", "--beam", "1"], work).stdout == \
        run(["generate", "--model", "np", "--length", "30", "--temperature", "0"], work).stdout
    ev = json.loads(run(["evaluate", "--model", "np", "--text", "text.txt"], work).stdout)
    assert ev["characters"] == 119_999 and abs(ev["bits_per_char"] - ev["loss_nats"] / np.log(2)) < 1e-12
    assert abs(ev["perplexity"] - np.exp(ev["loss_nats"])) < 1e-9 and ev["bits_per_char"] < np.log2(cfg["vocab_size"])


def test_tf_stacked_train_generate_evaluate(work):
    "The TensorFlow backend through the same commands: a stacked GRU trained, sampled, searched and evaluated in NumPy"
    run(["train", "--text", "text.txt", "--backend", "tf", "--cell", "gru", "--layers", "2", "--units", "16",
         "--batch-size", "8", "--seq-len", "16", "--steps", "30", "--eval-every", "10", "--out", "tf2"], work)
    cfg = json.loads((work / "tf2" / "config.json").read_text())
    assert (cfg["backend"], cfg["cell"], cfg["layers"], cfg["steps_done"]) == ("tf", "gru", 2, 30)
    assert "rnn/layer1/kernel" in np.load(work / "tf2" / "weights.npz").files
    log = [json.loads(line) for line in (work / "tf2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "valid_loss" in r] == [10, 20, 30]
    a = run(["generate", "--model", "tf2", "--prime", "The ", "--length", "40", "--seed", "5"], work).stdout
    assert a == run(["generate", "--model", "tf2", "--prime", "The ", "--length", "40", "--seed", "5"], work).stdout
    assert run(["generate", "--model", "tf2", "--length", "20", "--beam", "1"], work).stdout == \
        run(["generate", "--model", "tf2", "--length", "20", "--temperature", "0"], work).stdout
    ev = json.loads(run(["evaluate", "--model", "tf2", "--text", "text.txt"], work).stdout)
    assert ev["characters"] == 119_999 and ev["bits_per_char"] < np.log2(cfg["vocab_size"])


BAD = {  # arguments -> what the one-line message must contain
    "missing file": (["train", "--text", "missing.txt"], "--text: no such file"),
    "empty file": (["train", "--text", "empty.txt"], "empty"),
    "binary file": (["train", "--text", "binary.bin"], "binary"),
    "directory as text": (["train", "--text", "a_dir"], "is a directory"),
    "unknown corpus": (["train", "--corpus", "wikipedia"], "--corpus"),
    "unknown cell": (["train", "--cell", "transformer"], "--cell"),
    "seq-len 0": (["train", "--seq-len", "0"], "--seq-len: expected an integer >= 1, got '0'"),
    "units 0": (["train", "--units", "0"], "--units"),
    "steps 0": (["train", "--steps", "0"], "--steps"),
    "negative lr": (["train", "--lr", "-1"], "--lr"),
    "batch larger than data": (["train", "--text", "text.txt", "--batch-size", "100000"],
                               "--batch-size 100000 and --seq-len 100 need"),
    "out holds a model": (["train", "--text", "text.txt", "--backend", "numpy", "--out", "np"],
                          "--out: np already holds a model"),
    "resume without checkpoint": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "fresh",
                                   "--resume"],
                                  "--resume: no checkpoint"),
    "resume with other settings": (["train", "--text", "text.txt", "--backend", "numpy", *TINY[:2], "--units", "16",
                                    *TINY[4:], "--out", "np", "--resume"],
                                   "--units is 16 here, 32 in the checkpoint"),
    "resume on other text": (["train", "--corpus", "language-reference", "--backend", "numpy", *TINY, "--out", "np",
                              "--resume"], "the training text differs"),
    "model dir missing": (["generate", "--model", "nowhere"], "--model: no such directory"),
    "model is a file": (["generate", "--model", "text.txt"], "is not a directory"),
    "not a model dir": (["generate", "--model", "a_dir"], "is not a model directory"),
    "corrupt weights": (["generate", "--model", "truncated"], "not a valid weights file"),
    "other version": (["evaluate", "--model", "oldversion", "--text", "text.txt"], "saved by another version"),
    "no weights": (["generate", "--model", "noweights"], "no weights.npz"),
    "evaluate binary": (["evaluate", "--model", "np", "--text", "binary.bin"], "--text"),
    "evaluate without text": (["evaluate", "--model", "np"], "--text"),
    "demo over a trained model": (["demo", "--out", "np", "--steps", "1"], "--out: np already holds a model"),
    "no command": ([], "COMMAND"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(work, numpy_model, case):
    args, expected = BAD[case]
    before = snapshot(work)
    p = run(args, work, expect=2)
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("rnn-tutorial") and ": error: " in p.stderr, p.stderr
    assert expected in p.stderr and "Traceback" not in p.stderr and not p.stdout, p.stderr
    assert snapshot(work) == before, "bad input changed files"


def _interrupt(args, out: Path, cwd: Path, sig=signal.SIGINT) -> subprocess.Popen:
    "Start `train`, wait for its first checkpoint, send `sig`, wait for it to exit"
    proc = subprocess.Popen([*CLI, *map(str, args), "--out", out.name], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.out, proc.err = proc.communicate(timeout=300)
    return proc


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_interrupted_and_resumed_run_is_identical(work, backend):
    steps = 120
    args = ["train", "--text", "text.txt", "--backend", backend, "--cell", "lstm", "--units", "48",
            "--batch-size", "16", "--seq-len", "32",
            "--steps", steps, "--eval-every", "25", "--checkpoint-every", "10"]
    full, cut = work / f"{backend}-full", work / f"{backend}-cut"
    run([*args, "--out", full.name], work)
    proc = _interrupt(args, cut, work)
    assert proc.returncode == 130, proc.err
    stopped = json.loads((cut / "config.json").read_text())["steps_done"]
    assert 10 <= stopped < steps and "stopped by SIGINT" in proc.err and "--resume" in proc.err, proc.err
    assert len((cut / "log.jsonl").read_text().splitlines()) >= stopped
    run([*args, "--out", cut.name, "--resume"], work)
    a, b = np.load(full / "weights.npz"), np.load(cut / "weights.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert (full / "log.jsonl").read_bytes() == (cut / "log.jsonl").read_bytes()


def test_sigterm_saves_and_resume_extends_stacked_lstm(work):
    "SIGTERM exits 143 after a checkpoint; a stacked NumPy LSTM resumed (and extended) matches a straight run"
    args = ["train", "--text", "text.txt", "--backend", "numpy", "--cell", "lstm", "--layers", "2", "--units", "16",
            "--batch-size", "8",
            "--seq-len", "16", "--eval-every", "10", "--checkpoint-every", "5"]
    proc = _interrupt([*args, "--steps", "400"], work / "term", work, signal.SIGTERM)
    assert proc.returncode == 143 and "stopped by SIGTERM" in proc.err, proc.err
    stopped = json.loads((work / "term" / "config.json").read_text())["steps_done"]
    run([*args, "--steps", stopped + 20, "--out", "term", "--resume"], work)
    run([*args, "--steps", stopped + 20, "--out", "straight"], work)
    a, b = np.load(work / "straight" / "weights.npz"), np.load(work / "term" / "weights.npz")
    assert "rnn/layer1/kernel" in a.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert (work / "straight" / "log.jsonl").read_bytes() == (work / "term" / "log.jsonl").read_bytes()


def test_demo_tiny(work):
    p = run(["demo", "--steps", "20", "--units", "32", "--length", "40", "--out", "demo"], work)
    assert "held-out loss" in p.stdout and "unigram" in p.stdout and "uniform" in p.stdout
    assert "sample (temperature 0.8" in p.stdout
    cfg = json.loads((work / "demo" / "config.json").read_text())
    assert (cfg["command"], cfg["backend"], cfg["steps_done"]) == ("demo", "tf", 20)
    assert {"vocab.json", "weights.npz", "log.jsonl", "loss.png"} <= {f.name for f in (work / "demo").iterdir()}
    assert "Traceback" not in p.stderr and "step 20/20" in p.stderr


def test_info(work):
    info = json.loads(run(["info", "--json"], work).stdout)
    keys = {"rnn_tutorial", "python", "tensorflow", "keras", "gpus", "cudnn_for_keras_lstm_gru", "mixed_precision",
            "xla"}
    assert keys <= set(info)
    if not info["gpus"]: assert info["mixed_precision"] is False and info["device"] == "/CPU:0"


def test_memory_default_train(work):
    "`train` with the default sizes (TensorFlow, LSTM 256, 64 x 100) on a 1 MB text stays under 2 GiB resident"
    text = language_reference()
    (work / "big.txt").write_text((text * (1_000_000 // len(text) + 1))[:1_000_000], encoding="utf-8")
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.stderr.write(p.stderr[-2000:])")
    p = subprocess.run([sys.executable, "-c", code, *CLI, "train", "--text", "big.txt", "--steps", "3",
                        "--eval-every", "0", "--out", "big"],
                       cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    rc, peak_kib = map(int, p.stdout.split())
    assert rc == 0, p.stderr
    print(f"peak RSS of default `train` on 1 MB: {peak_kib / 2**20:.2f} GiB")
    assert peak_kib < 2 * 2**20, peak_kib
