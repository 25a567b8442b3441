"""Tests of the `rnn-tutorial` command: every command run as a subprocess on small data, bad input (hostile files,
foreign or unwritable --out, impossible sizes), interrupted and resumed runs, failures that keep the previous model,
internal errors, memory."""
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


def assert_error_line(stderr: str):
    "Bad input: one error line naming the command, after (for the parser's errors) one usage line"
    lines = stderr.splitlines()
    assert lines and lines[-1].startswith("rnn-tutorial") and ": error: " in lines[-1], stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage: ")), stderr


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
    for name in ("truncated", "truncatedbest", "oldversion", "noweights"): shutil.copytree(work / "np", work / name)
    for w in (work / "truncated" / "weights.npz", work / "truncatedbest" / "weights_best.npz"):
        w.write_bytes(w.read_bytes()[:200])
    cfg = json.loads((work / "oldversion" / "config.json").read_text())
    (work / "oldversion" / "config.json").write_text(json.dumps({**cfg, "version": 99, "package_version": "9.9"}))
    (work / "noweights" / "weights.npz").unlink()
    edits = {"hugecfg": {"units": 10**8}, "typecfg": {"units": "32"}, "unknowncfg": {"load": "os.system"},
             "vocabcfg": {"vocab_size": 5}}
    for name, edit in edits.items():
        shutil.copytree(work / "np", work / name)
        cfg = json.loads((work / name / "config.json").read_text())
        (work / name / "config.json").write_text(json.dumps({**cfg, **edit}))
    for name, value in (("nanmodel", np.nan), ("infmodel", np.inf)):
        shutil.copytree(work / "np", work / name)
        w = dict(np.load(work / name / "weights.npz"))
        w["dense/bias"][1] = value
        np.savez(work / name / "weights.npz", **w)
    for name, edit in DAMAGED_META.items():
        shutil.copytree(work / "np", work / name)
        _edit_checkpoint(work / name / "checkpoint.npz", edit)
    (work / "foreign").mkdir()
    (work / "foreign" / "notes.txt").write_text("my notes\n")
    (work / "foreign" / "summary.json").write_text("{}\n")  # a name of ours, in a directory that is not a model
    return work / "np"


def _edit_checkpoint(path: Path, edit):
    "Rewrite the metadata of the checkpoint at `path` with `edit(meta)`"
    from rnn_tutorial.persist import write_npz
    arrays = dict(np.load(path))
    meta = json.loads(arrays.pop("meta.json").tobytes())
    edit(meta)
    write_npz(path, arrays, meta)


DAMAGED_META = {  # damaged copies of the NumPy model's checkpoint, given to --resume
    "meta-nokey": lambda m: m.pop("rng"),
    "meta-type": lambda m: m.update(step="sixty"),
    "meta-negative": lambda m: m.update(step=-5),
}


@pytest.fixture(scope="module")
def tf_model(work):
    "A tiny TensorFlow model in work/tf, and copies of it whose checkpoint metadata is damaged"
    run(["train", "--text", "text.txt", "--backend", "tf", *TINY, "--steps", "10", "--out", "tf"], work)
    for name, edit in DAMAGED_META.items():
        shutil.copytree(work / "tf", work / f"tf{name}")
        _edit_checkpoint(work / f"tf{name}" / "checkpoint.npz", edit)
    return work / "tf"


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
    "corrupt weights": (["generate", "--model", "truncated", "--weights", "last"], "not a valid weights file"),
    "corrupt best weights": (["generate", "--model", "truncatedbest"], "not a valid weights file"),
    "other version": (["evaluate", "--model", "oldversion", "--text", "text.txt"], "saved by another version"),
    "no weights": (["generate", "--model", "noweights", "--weights", "last"], "no weights.npz"),
    "evaluate binary": (["evaluate", "--model", "np", "--text", "binary.bin"], "--text"),
    "evaluate without text": (["evaluate", "--model", "np"], "--text"),
    "demo over a trained model": (["demo", "--out", "np", "--steps", "1"], "--out: np already holds a model"),
    # issue 17: --out that is not ours, or cannot be written
    "foreign out": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "foreign"],
                    "--out: foreign is not empty (2 item(s), such as 'notes.txt') and holds no rnn-tutorial model"),
    "foreign out, --overwrite": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "foreign",
                                  "--overwrite"], "holds no rnn-tutorial model"),
    "foreign out, --resume": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "foreign",
                               "--resume"], "holds no rnn-tutorial model"),
    "demo over a foreign dir": (["demo", "--out", "foreign", "--steps", "1"], "holds no rnn-tutorial model"),
    "out is a file": (["train", "--text", "text.txt", "--out", "text.txt"], "--out: text.txt exists and is not a dir"),
    "out cannot be created": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "text.txt/run"],
                              "--out: cannot create text.txt/run: Not a directory"),
    "out under /proc": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "/proc/rnn-tutorial"],
                        "--out: cannot create /proc/rnn-tutorial"),
    "empty out": (["train", "--text", "text.txt", "--out", ""], "argument --out: expected a path, got ''"),
    "seed above 2**32 - 1": (["train", "--text", "text.txt", "--seed", str(2**32)],
                             "argument --seed: expected an integer in [0, 4294967295], got '4294967296'"),
    # impossible sizes: refused with the estimate, before anything is allocated
    "huge units": (["train", "--text", "text.txt", "--backend", "numpy", "--units", "1000000"],
                   "--units 1000000, --layers 1, --batch-size 64 and --seq-len 100: training a gru"),
    "huge layers": (["train", "--text", "text.txt", "--units", "4096", "--layers", "2000"], "GiB of memory available"),
    "huge beam": (["generate", "--model", "np", "--beam", "1000000000"], "--beam 1000000000 with --length 500 needs"),
    # hostile or damaged model directories
    "NaN weights, generate": (["generate", "--model", "nanmodel", "--weights", "last"],
                              "dense/bias holds 1 NaN or infinite value(s)"),
    "inf weights, evaluate": (["evaluate", "--model", "infmodel", "--text", "text.txt", "--weights", "last"],
                              "NaN or infinite"),
    "config asks for 10^8 units": (["generate", "--model", "hugecfg"], "config.json describes a model that needs"),
    "config with a string size": (["generate", "--model", "typecfg"],
                                  "field 'units' must be an integer >= 1, got '32'"),
    "config with an unknown field": (["generate", "--model", "unknowncfg"], "has the unknown field 'load'"),
    "vocabulary smaller than the model": (["evaluate", "--model", "vocabcfg", "--text", "text.txt"],
                                          "but config.json says vocab_size 5"),
    # damaged checkpoint metadata given to --resume (NumPy backend)
    **{f"resume {name}": (["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "70", "--out", name,
                           "--resume"], "--resume: ") for name in DAMAGED_META},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(work, numpy_model, case):
    args, expected = BAD[case]
    before = snapshot(work)
    p = run(args, work, expect=2)
    assert_error_line(p.stderr)
    assert expected in p.stderr and "Traceback" not in p.stderr and not p.stdout, p.stderr
    assert snapshot(work) == before, "bad input changed files"


@pytest.mark.parametrize("name", list(DAMAGED_META))
def test_tf_resume_refuses_damaged_metadata(work, tf_model, name):
    "The TensorFlow trainer's checkpoint, with a key missing, a step of the wrong type or a negative step"
    before = snapshot(work)
    p = run(["train", "--text", "text.txt", "--backend", "tf", *TINY, "--steps", "20", "--out", f"tf{name}",
             "--resume"], work, expect=2)
    assert len(p.stderr.splitlines()) == 1 and "--resume: " in p.stderr and "Traceback" not in p.stderr, p.stderr
    field = {"meta-nokey": "field 'rng' is missing", "meta-type": "step must be an integer >= 0, got 'sixty'",
             "meta-negative": "step must be an integer >= 0, got -5"}[name]
    assert field in p.stderr, p.stderr
    assert snapshot(work) == before


def test_overwrite_replaces_only_our_files(work, numpy_model):
    "--overwrite on a model directory that also holds a user's file: ours replaced, stale summary gone, theirs kept"
    shutil.copytree(work / "np", work / "ow")
    (work / "ow" / "notes.txt").write_text("keep me\n")
    old = (work / "ow" / "weights.npz").read_bytes()
    run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--units", "16", "--steps", "5",
         "--checkpoint-every", "2", "--out", "ow", "--overwrite"], work)
    assert (work / "ow" / "notes.txt").read_text() == "keep me\n"
    assert (work / "ow" / "weights.npz").read_bytes() != old
    assert json.loads((work / "ow" / "config.json").read_text())["units"] == 16
    assert not [f for f in (work / "ow").iterdir() if f.name.startswith(".")]  # no leftovers of the saves


def test_failed_run_keeps_the_previous_model(work, numpy_model):
    "A run that diverges before its first checkpoint leaves the model it was to replace as it was"
    shutil.copytree(work / "np", work / "diverge")
    before = snapshot(work / "diverge")
    p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--lr", "1e30", "--steps", "50",
             "--out", "diverge", "--overwrite"], work, expect=2)
    assert "training diverged at step" in p.stderr and "lower --lr" in p.stderr and "Traceback" not in p.stderr
    assert snapshot(work / "diverge") == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out(work):
    (work / "ro").mkdir()
    (work / "ro").chmod(0o500)
    try:
        p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "ro"], work, expect=2)
        assert "--out: cannot write in ro" in p.stderr and len(p.stderr.splitlines()) == 1
    finally: (work / "ro").chmod(0o700)


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


@pytest.mark.parametrize("backend, schedule", [("numpy", ["--lr-schedule", "cosine", "--warmup", "15"]), ("tf", [])])
def test_interrupted_and_resumed_run_is_identical(work, backend, schedule):
    "Resumed after Ctrl-C: the same weights, best weights, logs and learning rates (a cosine schedule: a pure \
function of the step)"
    steps = 120
    args = ["train", "--text", "text.txt", "--backend", backend, "--cell", "lstm", "--units", "48",
            "--batch-size", "16", "--seq-len", "32",
            "--steps", steps, "--eval-every", "25", "--checkpoint-every", "10", "--lr", "2e-3", *schedule]
    full, cut = work / f"{backend}-full", work / f"{backend}-cut"
    run([*args, "--out", full.name], work)
    proc = _interrupt(args, cut, work)
    assert proc.returncode == 130, proc.err
    stopped = json.loads((cut / "config.json").read_text())["steps_done"]
    assert 10 <= stopped < steps and "stopped by SIGINT" in proc.err and "--resume" in proc.err, proc.err
    assert len((cut / "log.jsonl").read_text().splitlines()) >= stopped
    run([*args, "--out", cut.name, "--resume"], work)
    for name in ("weights.npz", "weights_best.npz"):
        a, b = np.load(full / name), np.load(cut / name)
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert (full / "log.jsonl").read_bytes() == (cut / "log.jsonl").read_bytes()
    rows = [[r[:-1] for r in np.genfromtxt(d / "log.csv", delimiter=",", skip_header=1).tolist()] for d in (full, cut)]
    assert len(rows[0]) == steps and np.array_equal(np.array(rows[0]), np.array(rows[1]), equal_nan=True)
    lr = np.array(rows[0])[:, 4]
    assert (lr[14], lr[15], lr[-1]) == (2e-3, 2e-3, 2e-4) if schedule else set(lr) == {2e-3}


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
    speeds = info["backend_speeds"]
    assert speeds["numpy_tokens_per_second"] > 0 < speeds["tf_tokens_per_second"]
    assert speeds["faster"] == max(("numpy", "tf"), key=lambda b: speeds[f"{b}_tokens_per_second"])
    if not info["gpus"]: assert info["mixed_precision"] is False and info["device"] == "/CPU:0"


def test_memory_default_train(work):
    "`train` with the default sizes (TensorFlow, GRU 256, 64 x 100) on a 1 MB text stays under 2 GiB resident"
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


def test_internal_error_is_one_line_exit_1(monkeypatch, capsys):
    "An error of ours: exit 1, one line with the exception type and where to report it; the traceback on request"
    from rnn_tutorial import cli

    def broken(args): raise ZeroDivisionError("division by zero\nsecond line")
    monkeypatch.setattr(cli, "cmd_info", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "internal error (ZeroDivisionError: division by zero\\nsecond line)" in err
    assert cli.ISSUES_URL in err and f"{cli.DEBUG_ENV}=1" in err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError): cli.main(["info"])


def test_unwritable_out_in_process(work, monkeypatch, capsys):
    "A directory we may not write in (as a read-only one, even for root): exit 2, one line, nothing written"
    from rnn_tutorial import cli
    (work / "locked").mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path).name != "locked")
    assert cli.main(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "locked"]) == 2
    err = capsys.readouterr().err
    assert err == "rnn-tutorial train: error: --out: cannot write in locked: permission denied\n"
    assert not list((work / "locked").iterdir())


def test_failed_save_keeps_the_previous_model(work, numpy_model, monkeypatch, capsys):
    "A save that fails (a full disk) at the first checkpoint leaves the previous model and checkpoint as they were"
    from rnn_tutorial import cli
    shutil.copytree(work / "np", work / "full")
    before = snapshot(work / "full")

    def full_disk(*a, **k): raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli, "write_npz", full_disk)
    monkeypatch.chdir(work)
    args = ["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "2", "--out", "full", "--overwrite"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == "rnn-tutorial train: error: --out: cannot write in full: No space left on device; full holds its " \
                  "last complete save"
    assert snapshot(work / "full") == before


# --- issue 18: a parser that helps, hints that paste, what training prints -------------------------------------------

def _main(argv, capsys):
    "`cli.main(argv)` in this process: (exit status, stdout, stderr)"
    from rnn_tutorial import cli
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_bare_call_prints_usage_and_commands(capsys):
    code, out, err = _main([], capsys)
    assert code == 2 and not out and err.startswith("usage: rnn-tutorial")
    for command in ("demo", "train", "generate", "evaluate", "info", "bench"): assert f"\n    {command} " in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--txt", "my.txt"], "rnn-tutorial train: error: unknown option '--txt': did you mean --text?"),
    (["train", "--text=my.txt", "--unts", "3"], "rnn-tutorial train: error: unknown option '--unts': did you mean "
                                                "--units?"),
    (["generate", "--model", "m", "--temprature", "0.5"], "did you mean --temperature?"),
    (["trian"], "rnn-tutorial: error: argument COMMAND: invalid choice: 'trian' (choose from"),
    (["trian"], "did you mean train?"),
    (["train", "--cell", "mingur"], "did you mean mingru?"),
    (["train", "stray"], "rnn-tutorial train: error: unexpected argument 'stray'"),
])
def test_parser_errors_name_the_command_show_its_usage_and_suggest(argv, message, capsys):
    code, out, err = _main(argv, capsys)
    assert code == 2 and not out
    assert_error_line(err)
    assert message in err.splitlines()[-1], err
    usage = err.splitlines()[0]
    command = "train" if argv[0] == "train" else "generate" if argv[0] == "generate" else ""
    assert usage.startswith(f"usage: rnn-tutorial{' ' + command if command else ''}"), usage
    assert usage.endswith(f"rnn-tutorial{' ' + command if command else ''} --help lists them"), usage


def test_usage_line_names_required_options(capsys):
    code, _, err = _main(["evaluate", "--model", "m"], capsys)
    usage = err.splitlines()[0]
    assert code == 2 and usage.startswith("usage: rnn-tutorial evaluate --model DIR --text PATH [options]"), usage


@pytest.mark.parametrize("command", [None, "demo", "train", "generate", "evaluate", "info"])
def test_help_ends_with_examples(command, capsys):
    code, out, _ = _main([command, "--help"] if command else ["--help"], capsys)
    assert code == 0
    examples = out.rstrip("\n").split("\nexamples:\n")[1].splitlines()
    assert examples and all(line.startswith(f"  rnn-tutorial {command or ''}".rstrip()) for line in examples), out
    from rnn_tutorial.cli import build_parser  # every example parses
    for line in examples:
        args, extra = build_parser().parse_known_args(shlex_split(line)[1:])
        assert not extra, line


def shlex_split(line):
    import shlex
    return shlex.split(line)


def test_defaults_show_as_typed(capsys):
    _, out, _ = _main(["generate", "--help"], capsys)
    assert "text to start from (default: $'\\n')" in out and "(default: 0)" in out  # --prime's newline; --beam's 0
    _, out, _ = _main(["train", "--help"], capsys)
    assert "(default: language-reference)" in out and "(default: 0.005)" in out


def test_command_hint_is_what_the_user_ran(tmp_path, monkeypatch):
    "Hints name `rnn-tutorial` when it is on PATH, else the path that was run (or `python -m rnn_tutorial.cli`)"
    from rnn_tutorial import cli
    script = tmp_path / "venv bin" / "rnn-tutorial"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli._command() == f"'{script}'"  # quoted: its directory has a space
    monkeypatch.setenv("PATH", str(script.parent))
    assert cli._command() == "rnn-tutorial"
    monkeypatch.setattr(sys, "argv", [cli.__file__])
    assert cli._command() == f"{sys.executable} -m rnn_tutorial.cli"


def test_demo_hint_pastes(work, monkeypatch, capsys):
    "The demo's closing hint runs as printed (here, as `python -m rnn_tutorial.cli`, what the test ran)"
    from rnn_tutorial import cli
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", [cli.__file__])
    monkeypatch.setattr(cli, "train_run", lambda *a, **k: 0)  # the demo's training, replaced by the tiny model
    shutil.copytree(work / "np", work / "hint demo", dirs_exist_ok=True)
    cfg = json.loads((work / "hint demo" / "config.json").read_text())
    (work / "hint demo" / "config.json").write_text(json.dumps({**cfg, "command": "demo"}))
    code, out, _ = _main(["demo", "--out", "hint demo", "--length", "5"], capsys)
    hint = out.strip().splitlines()[-1]
    assert code == 0 and hint.startswith(f"more: {sys.executable} -m rnn_tutorial.cli generate --model 'hint demo'")
    p = subprocess.run(hint[len("more: "):], shell=True, cwd=work, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.startswith("def "), p.stderr


@pytest.mark.parametrize("flags", [["--temperature", "0.5"], ["--top-k", "3"], ["--seed", "0"],
                                   ["--temp", "1.0", "--seed", "4"]])
def test_beam_refuses_the_flags_it_ignores(work, numpy_model, flags, monkeypatch, capsys):
    monkeypatch.chdir(work)
    code, out, err = _main(["generate", "--model", "np", "--beam", "2", *flags], capsys)
    assert code == 2 and not out and len(err.splitlines()) == 1
    assert err.startswith("rnn-tutorial generate: error: --beam: beam search is deterministic and ignores "), err
    assert "drop --beam to sample" in err
    code, out, _ = _main(["generate", "--model", "np", *flags, "--length", "3"], capsys)  # without --beam: fine
    assert code == 0


def test_progress_shows_running_mean_and_time_left():
    import io
    from rnn_tutorial.cli import Progress
    buf = io.StringIO()
    p = Progress(total=4, stream=buf, every=0, window=2)
    for step, loss in enumerate([4.0, 3.0, 2.0, 1.0], 1): p.update(step, loss, tokens=10)
    lines = buf.getvalue().splitlines()
    assert [line.split(" loss ")[1][:5] for line in lines] == ["4.000", "3.500", "2.500", "1.500"]
    assert "mean of 2)" in lines[-1] and " ETA " in lines[-1]
    buf = io.StringIO()
    p = Progress(total=None, seconds=60, stream=buf, every=0)
    p.update(1, 2.0, tokens=10)
    line = buf.getvalue()
    assert line.startswith("step 1 loss 2.000 (2.89 bits/char, mean of 1)") and (" left 1:00" in line or
                                                                               " left 0:59" in line), line


# --- issue 20: minGRU and minLSTM from the command line -------------------------------------------------------------

MIN = ["--backend", "numpy", "--units", "16", "--batch-size", "4", "--seq-len", "16", "--eval-every", "10"]


def test_train_mingru_then_generate_and_evaluate(work):
    "A minGRU trained, sampled, searched and evaluated; the start line gives the parameter count and the data sizes"
    from rnn_tutorial.cli import load_model_dir
    from rnn_tutorial.numpy_rnn import flatten_tree
    p = run(["train", "--text", "text.txt", "--cell", "mingru", *MIN, "--steps", "20", "--out", "mingru"], work)
    model, vocab, cfg = load_model_dir(work / "mingru")
    assert (cfg["backend"], cfg["cell"], cfg["steps_done"]) == ("numpy", "mingru", 20)
    assert type(model.layer).__name__ == "MinGRU"
    n = sum(v.size for v in flatten_tree(model.params).values())
    V = len(vocab)
    assert n == V * 2 * 16 + 2 * 16 + 16 * V + V  # kernel (V, 2H), bias (2H,), the dense layer
    assert (f"mingru (numpy, 1 x 16 units): {n:,} parameters; text.txt: 108,000 training and 12,000 held-out "
            f"characters, vocabulary of {V}") in p.stderr.splitlines()[0], p.stderr
    a = run(["generate", "--model", "mingru", "--prime", "The ", "--length", "40", "--seed", "2"], work).stdout
    assert a == run(["generate", "--model", "mingru", "--prime", "The ", "--length", "40", "--seed", "2"], work).stdout
    assert a.startswith("The ") and len(a.rstrip("\n")) >= 40
    assert run(["generate", "--model", "mingru", "--length", "20", "--beam", "1"], work).stdout == \
        run(["generate", "--model", "mingru", "--length", "20", "--temperature", "0"], work).stdout
    ev = json.loads(run(["evaluate", "--model", "mingru", "--text", "text.txt"], work).stdout)
    assert ev["characters"] == 119_999 and ev["bits_per_char"] < np.log2(V)


def test_train_minlstm_stacked_and_resumed(work, capsys, monkeypatch):
    "Two minLSTM layers, stopped at 10 steps and resumed to 20: the same weights as 20 steps straight through"
    from rnn_tutorial import cli
    monkeypatch.chdir(work)
    args = ["train", "--text", "text.txt", "--cell", "minlstm", "--layers", "2", *MIN]
    assert cli.main([*args, "--steps", "20", "--out", "minlstm-a"]) == 0
    assert cli.main([*args, "--steps", "10", "--out", "minlstm-b"]) == 0
    assert cli.main([*args, "--steps", "20", "--out", "minlstm-b", "--resume"]) == 0
    capsys.readouterr()
    a, b = np.load(work / "minlstm-a" / "weights.npz"), np.load(work / "minlstm-b" / "weights.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    model, _, cfg = cli.load_model_dir(work / "minlstm-b")
    assert cfg["layers"] == 2 and [type(m).__name__ for m in model.layer.layers] == ["MinLSTM", "MinLSTM"]


def test_tf_backend_refuses_minimal_cells(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    for cell in ("mingru", "minlstm"):
        code, out, err = _main(["train", "--text", "text.txt", "--cell", cell, "--out", "never"], capsys)
        assert code == 2 and not out and len(err.splitlines()) == 1, err
        assert f"--cell {cell}: the TensorFlow backend trains rnn, lstm, gru; train a {cell} with --backend numpy" \
            in err
    assert not (work / "never").exists()


def test_memory_estimate_of_minimal_cells():
    from rnn_tutorial.cli import memory_needed
    assert memory_needed("mingru", 64, 1, 90, 8, 32) < memory_needed("gru", 64, 1, 90, 8, 32) \
        < memory_needed("lstm", 64, 1, 90, 8, 32)
    assert memory_needed("minlstm", 64, 1, 90, 8, 32) == memory_needed("gru", 64, 1, 90, 8, 32)  # 3 blocks each


# issue 18: honest validation, the best weights, resume that may change, fine-tuning, one unknown-character policy,
# the generating and training options


def test_evaluate_spread_has_no_false_joins():
    "A periodic evaluation on part of the held-out text: each evenly spaced piece its own stream, as if alone"
    from rnn_tutorial import numpy_train as nt
    from rnn_tutorial.cli import evaluate_spread
    rng = np.random.default_rng(0)
    model, ids = nt.init_model(7, 8, 0), rng.integers(0, 7, 1000).astype(np.int32)
    ev = evaluate_spread(nt.numpy_window(model), ids, 100, 16, streams=4)
    starts, c = np.linspace(0, 1000 - 25, 4).round().astype(int), 25
    alone = [nt.evaluate(model, ids[a:a + c], 1, 16) for a in starts]
    assert ev.n == 4 * 24 and starts[0] == 0 and starts[-1] + c == 1000
    assert abs(ev.nats - np.mean([e.nats for e in alone])) < 1e-6  # float32 sums; a false join moves it ~1e-2
    full = evaluate_spread(nt.numpy_window(model), ids, 5000, 16)
    assert full == nt.evaluate(model, ids, 32, 16)  # all of it: the final figure's evaluation


def test_periodic_evaluations_best_weights_and_resume_changes(work, numpy_model):
    "All the held-out text by default; the best weights kept and used; --resume may change lr, steps, evaluation"
    m = numpy_model
    cfg, summary = json.loads((m / "config.json").read_text()), json.loads((m / "summary.json").read_text())
    log = [json.loads(line) for line in (m / "log.jsonl").read_text().splitlines()]
    valid = [r["valid_loss"] for r in log if "valid_loss" in r]
    assert cfg["settings"]["eval_chars"] == 12_000 and abs(valid[-1] - summary["valid_loss_nats"]) < 1e-9
    assert cfg["best"]["valid_loss_nats"] == min(valid) and summary["best_step"] == cfg["best"]["step"]
    shutil.copytree(m, work / "more")
    w40 = None
    p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "100", "--lr", "0.01",
             "--eval-chars", "3000", "--out", "more", "--resume"], work)
    notes = [line for line in p.stderr.splitlines() if "--resume:" in line]
    assert notes == ["rnn-tutorial train: --resume: --eval-chars 3000 (it was 12000) from step 61 on",
                     "rnn-tutorial train: --resume: --lr 0.01 (it was 0.005) from step 61 on",
                     "rnn-tutorial train: --resume: --steps 100 (it was 60) from step 61 on"], p.stderr
    assert "on 3,000 of the 12,000 held-out characters, in 32 evenly spaced pieces" in p.stderr
    assert "best weights (step" in p.stdout and "held-out loss:" in p.stdout
    csv = np.genfromtxt(work / "more" / "log.csv", delimiter=",", names=True)
    assert len(csv) == 100 and set(csv["lr"][:60]) == {0.005} and set(csv["lr"][60:]) == {0.01}
    assert list(np.flatnonzero(~np.isnan(csv["valid_loss"])) + 1) == [20, 40, 60, 80, 100]
    cfg = json.loads((work / "more" / "config.json").read_text())
    log = [json.loads(line) for line in (work / "more" / "log.jsonl").read_text().splitlines()]
    best = min((r["valid_loss"], r["step"]) for r in log if "valid_loss" in r)
    assert (cfg["best"]["valid_loss_nats"], cfg["best"]["step"]) == best
    if best[1] == 100: w40 = np.load(work / "more" / "weights.npz")
    else: w40 = np.load(m / "weights_best.npz") if best[1] == 60 else None
    if w40 is not None:
        b = np.load(work / "more" / "weights_best.npz")
        assert all(np.array_equal(w40[k], b[k]) for k in b.files)
    ev = {w: json.loads(run(["evaluate", "--model", "more", "--text", "text.txt", "--weights", w], work).stdout)
          for w in ("best", "last")}
    assert ev["best"]["weights"] == "best" and ev["last"]["weights"] == "last"
    assert (ev["best"]["loss_nats"] == ev["last"]["loss_nats"]) == (best[1] == 100)
    p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--batch-size", "4", "--steps", "100",
             "--lr", "0.5", "--out", "more", "--resume"], work, expect=2)
    assert_error_line(p.stderr)
    assert "--batch-size is 4 here, 8 in the checkpoint" in p.stderr and "--lr" not in p.stderr


def test_no_best_copy_says_so_once(work):
    run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--eval-every", "0", "--steps", "3",
         "--out", "nobest"], work)
    assert not (work / "nobest" / "weights_best.npz").exists()
    p = run(["generate", "--model", "nobest", "--length", "5"], work)
    assert p.stderr.count("\n") == 1 and "has no best weights" in p.stderr and "using the last ones" in p.stderr


def test_early_stop_keeps_the_best(work, numpy_model):
    "With a learning rate too small to change float32 weights, no evaluation is a new best: stop after PATIENCE"
    shutil.copytree(numpy_model, work / "patience")
    p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "500", "--lr", "1e-30",
             "--eval-every", "5", "--early-stop", "2", "--out", "patience", "--resume"], work)
    summary = json.loads((work / "patience" / "summary.json").read_text())
    assert summary["steps"] == 70 and summary["early_stop"] and "early stop at step 70" in p.stderr, p.stderr
    assert summary["best_step"] == json.loads((numpy_model / "config.json").read_text())["best"]["step"]
    p = run(["train", "--text", "text.txt", "--early-stop", "3", "--eval-every", "0"], work, expect=2)
    assert "--early-stop 3 counts periodic evaluations: --eval-every must be > 0" in p.stderr


def _fine_tune_text(work) -> str:
    "Text B: text A's characters and new ones (é, ß, Ω) throughout, in its training and held-out parts"
    text = language_reference()[200_000:260_000].replace("e ", "é ").replace("ss", "ß").replace("O", "Ω")
    (work / "b.txt").write_text(text, encoding="utf-8")
    return "b.txt"


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_init_from_grows_the_vocabulary(work, numpy_model, backend):
    "Fine-tuned on a text with new characters: the old characters' weights are kept at step 0, the new ones fresh"
    from rnn_tutorial.data import Vocab
    b, out = _fine_tune_text(work), f"tuned-{backend}"
    p = run(["train", "--text", b, "--backend", backend, "--batch-size", "8", "--seq-len", "32", "--steps", "1",
             "--lr", "1e-12", "--eval-every", "0", "--init-from", "np", "--out", out], work)
    assert "from the weights of np" in p.stderr
    old_v, new_v = Vocab.load(work / "np" / "vocab.json"), Vocab.load(work / out / "vocab.json")
    assert set(old_v.chars) < set(new_v.chars) and {"é", "ß", "Ω"} <= set(new_v.chars)
    old, new = np.load(work / "np" / "weights_best.npz"), np.load(work / out / "weights.npz")
    ids = new_v.encode(old_v.chars)
    assert np.allclose(new["rnn/kernel"][ids], old["rnn/kernel"], atol=1e-6)
    assert np.allclose(new["dense/kernel"][:, ids], old["dense/kernel"], atol=1e-6)
    assert np.allclose(new["dense/bias"][ids], old["dense/bias"], atol=1e-6)
    assert np.allclose(new["rnn/recurrent_kernel"], old["rnn/recurrent_kernel"], atol=1e-6)
    fresh = np.setdiff1d(np.arange(len(new_v)), ids)
    assert len(fresh) >= 3 and np.abs(new["rnn/kernel"][fresh]).max() > 0  # initialised, not zero
    cfg = json.loads((work / out / "config.json").read_text())
    assert cfg["settings"]["init_from"] == {"model": "np", "weights": "best", "vocab_size": len(old_v)}
    if backend == "numpy":  # and it trains
        run(["train", "--text", b, "--backend", backend, "--batch-size", "8", "--seq-len", "32", "--steps", "30",
             "--eval-every", "10", "--init-from", "np", "--out", "tuned-trains"], work)
        log = np.genfromtxt(work / "tuned-trains" / "log.csv", delimiter=",", names=True)
        assert log["loss"][-10:].mean() < log["loss"][:10].mean()


def test_init_from_refuses_conflicts(work, numpy_model):
    for extra, message in ((["--units", "64"], "--init-from: np is a lstm of 1 x 32 units, its architecture; "
                                               "--units 64 differs: drop --units"),
                           (["--size", "large"], "drop --size"),
                           (["--resume"], "--init-from starts a new run and --resume continues one")):
        p = run(["train", "--text", "text.txt", "--init-from", "np", *extra, "--out", "x"], work, expect=2)
        assert_error_line(p.stderr)
        assert message in p.stderr, p.stderr


def test_unknown_characters_one_policy(work, numpy_model):
    (work / "accents.txt").write_text("The café is naïve. " * 20, encoding="utf-8")
    p = run(["evaluate", "--model", "np", "--text", "accents.txt"], work)
    assert json.loads(p.stdout)["unknown_characters"] == 40
    assert "40 of the 380 characters of accents.txt are not in the model's vocabulary" in p.stderr
    for command in (["evaluate", "--text", "accents.txt"], ["generate", "--prime", "café"]):
        p = run([command[0], "--model", "np", *command[1:], "--unknown", "refuse"], work, expect=2)
        assert_error_line(p.stderr)
        assert "--unknown refuse: character 'é' (U+00E9) at position" in p.stderr, p.stderr
    p = run(["generate", "--model", "np", "--prime", "café", "--length", "5"], work)
    assert p.stdout.startswith("café") and "1 of the 4 characters of --prime" in p.stderr
    # a model of the first format, whose vocabulary has no unknown symbol: read, but not replaced, nor resumed
    shutil.copytree(work / "np", work / "v1")
    cfg = json.loads((work / "v1" / "config.json").read_text())
    cfg.pop("best")
    (work / "v1" / "config.json").write_text(json.dumps({**cfg, "version": 1}))
    vocab = json.loads((work / "v1" / "vocab.json").read_text())
    assert vocab.get("unknown") == "\ufffd"
    from rnn_tutorial.data import Vocab
    old = Vocab.load(work / "v1" / "vocab.json")
    Vocab(old.chars.replace("\ufffd", "") + "\x07").save(work / "v1" / "vocab.json")  # same size, no unknown
    (work / "plain.txt").write_text("The cat sat on the mat.\n" * 10, encoding="utf-8")
    p = run(["evaluate", "--model", "v1", "--text", "plain.txt"], work)
    assert "has no best weights" in p.stderr and json.loads(p.stdout)["unknown_characters"] == 0
    p = run(["evaluate", "--model", "v1", "--text", "accents.txt"], work, expect=2)
    assert "has no unknown symbol" in p.stderr and "--init-from" in p.stderr
    p = run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--out", "v1", "--resume"], work, expect=2)
    assert_error_line(p.stderr)
    assert "model format 1" in p.stderr and "--init-from v1 --out NEW-DIR" in p.stderr


def test_num_samples_and_prime_file(work, numpy_model):
    p = run(["generate", "--model", "np", "--prime", "The ", "--length", "30", "--num-samples", "2", "--seed", "7"],
            work)
    second = run(["generate", "--model", "np", "--prime", "The ", "--length", "30", "--seed", "8"], work).stdout
    assert p.stdout.startswith("=== sample 1 of 2 (seed 7) ===\nThe ")
    assert p.stdout.endswith("=== sample 2 of 2 (seed 8) ===\n" + second), p.stdout
    (work / "start.txt").write_text("class Foo:\n", encoding="utf-8")
    p = run(["generate", "--model", "np", "--prime-file", "start.txt", "--length", "10"], work)
    assert p.stdout.startswith("class Foo:\n")
    for args, message in ((["--prime-file", "missing.txt"], "--prime-file: no such file: missing.txt"),
                          (["--prime-file", "empty.txt"], "--prime-file: empty.txt is empty"),
                          (["--prime-file", "binary.bin"], "looks like a binary file"),
                          (["--prime-file", "start.txt", "--prime", "x"], "not allowed with argument"),
                          (["--beam", "3", "--num-samples", "2"], "ignores --num-samples")):
        p = run(["generate", "--model", "np", *args], work, expect=2)
        assert_error_line(p.stderr)
        assert message in p.stderr, p.stderr


def test_sample_every_does_not_change_the_weights(work):
    args = ["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "20"]
    p = run([*args, "--sample-every", "10", "--out", "sampled"], work)
    run([*args, "--out", "unsampled"], work)
    assert p.stderr.count("--- sample at step") == 2 and "--- sample at step 20 (seed 0) ---" in p.stderr
    a, b = np.load(work / "sampled" / "weights.npz"), np.load(work / "unsampled" / "weights.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_lr_schedule_is_a_function_of_the_step():
    from rnn_tutorial.cli import lr_at
    assert [lr_at(s, 1.0, "constant", 4) for s in (1, 2, 4, 5, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert lr_at(5, 1.0, "cosine", 4, 104) == 1.0 and abs(lr_at(104, 1.0, "cosine", 4, 104) - 0.1) < 1e-12
    assert abs(lr_at(54, 1.0, "cosine", 4, 104) - 0.55) < 0.01
    assert [lr_at(s, 1.0, "step", 0, 101) for s in (1, 26, 51, 76, 101)] == [1.0, 0.5, 0.25, 0.125, 0.125]


def test_lr_schedule_needs_a_step_total(work):
    p = run(["train", "--text", "text.txt", "--lr-schedule", "cosine", "--minutes", "1"], work, expect=2)
    assert_error_line(p.stderr)
    assert "--lr-schedule cosine decays over the step total: give --steps" in p.stderr


def test_tensorboard_scalars_and_csv(work):
    "--tensorboard writes scalars TensorBoard reads (read back here with TensorFlow); log.csv has a row per step"
    import tensorflow as tf
    run(["train", "--text", "text.txt", "--backend", "numpy", *TINY, "--steps", "20", "--eval-every", "10",
         "--tensorboard", "tb", "--out", "tbrun"], work)
    seen = {}
    for f in (work / "tb").iterdir():
        for e in tf.compat.v1.train.summary_iterator(str(f)):
            for v in e.summary.value:
                assert v.metadata.plugin_data.plugin_name == "scalars"
                seen.setdefault(v.tag, []).append((e.step, float(tf.make_ndarray(v.tensor))))
    assert set(seen) == {"loss", "grad_norm", "lr", "valid_loss"} and len(seen["loss"]) == 20
    csv = np.genfromtxt(work / "tbrun" / "log.csv", delimiter=",", names=True)
    assert csv.dtype.names == ("step", "loss", "grad_norm", "valid_loss", "lr", "seconds")
    assert np.allclose([v for _, v in seen["loss"]], csv["loss"], rtol=1e-6)
    assert [s for s, _ in seen["valid_loss"]] == [10, 20]


def test_size_presets(work, capsys):
    from rnn_tutorial import cli
    from rnn_tutorial import numpy_train as nt
    from rnn_tutorial.numpy_rnn import flatten_tree
    for cell in cli.CELLS:
        for layers in (1, 2):
            model = nt.init_model(50, 8, 0, layer=cli._numpy_layer(cell, 8, layers, 50, 0))
            assert cli.count_params(cell, 8, layers, 50) == sum(v.size for v in flatten_tree(model.params).values())
    assert cli.main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"large 512 units x 2 layer(s), {cli.count_params('gru', 512, 2, 100):,} parameters" in out
    run(["train", "--text", "text.txt", "--backend", "numpy", "--size", "small", "--layers", "2", "--batch-size", "4",
         "--seq-len", "8", "--steps", "1", "--eval-every", "0", "--out", "small"], work)
    cfg = json.loads((work / "small" / "config.json").read_text())
    assert (cfg["units"], cfg["layers"]) == (128, 2)


def test_tf_options_refused_where_they_do_not_apply(work):
    for args, message in ((["--backend", "numpy", "--dropout", "0.2"], "--dropout 0.2: the NumPy backend has no "
                                                                       "dropout: train with --backend tf"),
                          (["--backend", "numpy", "--device", "cpu"], "--device cpu: it places TensorFlow's work"),
                          (["--backend", "numpy", "--distribute", "mirrored"], "--distribute mirrored: it places"),
                          (["--device", "cpu", "--distribute", "mirrored"], "give one of them"),
                          (["--dropout", "1"], "argument --dropout: expected a number in [0, 1), got '1'")):
        p = run(["train", "--text", "text.txt", *TINY, *args, "--out", "never"], work, expect=2)
        assert_error_line(p.stderr)
        assert message in p.stderr, p.stderr
    assert not (work / "never").exists()


@pytest.mark.skipif(bool(os.environ.get("CUDA_VISIBLE_DEVICES")), reason="a GPU may be visible")
def test_device_gpu_without_a_gpu_is_one_line(work):
    from rnn_tutorial.tf_setup import gpu_details
    if gpu_details(): pytest.skip("a GPU is visible")
    p = run(["train", "--text", "text.txt", *TINY, "--device", "gpu", "--steps", "2", "--out", "never"], work,
            expect=2)
    assert_error_line(p.stderr)
    assert "--device gpu: device 'gpu' was asked for, but none is visible" in p.stderr


def test_dropout_and_mirrored_train_and_resume_exactly(work):
    "TensorFlow with --dropout, and with --distribute mirrored: 10 steps then 10 resumed give a straight 20's weights"
    for name, extra in (("dropout", ["--dropout", "0.3", "--device", "cpu"]),
                        ("mirrored", ["--distribute", "mirrored"])):
        args = ["train", "--text", "text.txt", "--backend", "tf", *TINY, *extra]
        run([*args, "--steps", "20", "--out", f"{name}-straight"], work)
        run([*args, "--steps", "10", "--out", f"{name}-cut"], work)
        run([*args, "--steps", "20", "--out", f"{name}-cut", "--resume"], work)
        a, b = np.load(work / f"{name}-straight" / "weights.npz"), np.load(work / f"{name}-cut" / "weights.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files), name
    cfg = json.loads((work / "dropout-straight" / "config.json").read_text())
    assert cfg["settings"]["dropout"] == 0.3
    p = run(["train", "--text", "text.txt", "--backend", "tf", *TINY, "--dropout", "0.1", "--steps", "30",
             "--out", "dropout-cut", "--resume"], work, expect=2)
    assert "--dropout is 0.1 here, 0.3 in the checkpoint" in p.stderr


def test_multi_worker_two_processes_on_localhost(work):
    "--distribute multi-worker: the same command in two processes with TF_CONFIG; the chief alone writes --out, \
and both resume from its checkpoint"
    from rnn_tutorial.keras_layers import free_port, tf_config
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    args = ["train", "--text", "text.txt", "--backend", "tf", *TINY, "--distribute", "multi-worker", "--out", "mw"]
    for steps, resume in ((10, []), (20, ["--resume"])):
        procs = [subprocess.Popen([*CLI, *args, "--steps", str(steps), *resume], cwd=work, text=True,
                                  env={**ENV, "TF_CONFIG": tf_config(workers, i)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for i in range(2)]
        try: outs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None: p.kill(), p.wait()
        assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
        assert "saved in mw/" in outs[0][0] and "the chief writes the model" in outs[1][0], outs
        assert json.loads((work / "mw" / "config.json").read_text())["steps_done"] == steps


def test_final_evaluation_can_be_the_best(work):
    "The evaluation at the end is a candidate too: last weights that beat every periodic best become the best copy"
    run(["train", "--text", "text.txt", "--backend", "numpy", *TINY[:-2], "--eval-every", "25", "--lr", "0.02",
         "--steps", "40", "--out", "fin"], work)
    cfg = json.loads((work / "fin" / "config.json").read_text())
    summary = json.loads((work / "fin" / "summary.json").read_text())
    assert cfg["best"]["step"] == 40 and summary["best_valid_loss_nats"] == summary["valid_loss_nats"]
    a, b = np.load(work / "fin" / "weights.npz"), np.load(work / "fin" / "weights_best.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
