"""The benchmark command (`rnn_tutorial.bench`): FLOP formulas, option validation, the JSON it prints, the saved
run. Never asserts on speed."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnn_tutorial import bench
from rnn_tutorial.numpy_rnn import CELL_GATES

ROOT = Path(__file__).resolve().parents[1]
SAVED = ROOT / "rnn_tutorial" / "results" / "bench.json"
SAVED_MINGRU = ROOT / "rnn_tutorial" / "results" / "bench_mingru.json"
CHAR_RATIOS = [f"{impl}/{k} / keras/{k}" for k in CELL_GATES for impl in ("numpy", "tf", "tf-xla")]
CHAR_RATIOS.append("numpy/rnn_gflops / gemm_gflops")
MINGRU_RATIOS = ["numpy/mingru / numpy GRU layer", "tf/mingru / keras GRU layer", "mingru / keras GRU layer"]
RATIOS = CHAR_RATIOS + MINGRU_RATIOS


def check_schema(result, keys=bench.KEYS):
    """The object `--json` prints: config with sizes and machine, a positive number per key, GEMM rate, ratios and
    targets."""
    c = result["config"]
    for k in ("batch", "seq_len", "units", "vocab", "embedding", "repeats", "warmup"):
        assert isinstance(c[k], int) and c[k] >= (0 if k == "warmup" else 1), k
    assert c["dtype"] == "float32"
    m = c["machine"]
    assert m["cpu_count"] >= 1 and m["numpy"] == np.__version__
    assert {"name", "version", "threads", "kernel", "env"} <= set(m["blas"])
    assert list(result["tokens_per_s"]) == list(keys)
    for k in keys:
        v = result["tokens_per_s"][k]
        assert isinstance(v, float) and math.isfinite(v) and v > 0, k
        assert result["ms_per_step"][k] > 0
    assert result["gemm_gflops"] > 0 and result["gemm_gflops"] == max(result["gemm"].values())
    for name, t in result["targets"].items():
        assert t["value"] == result["ratios"][name] and t["met"] == (t["value"] >= t["min"])
    if "numpy/rnn" in keys and "keras/rnn" in keys:
        r = result["ratios"]["numpy/rnn / keras/rnn"]
        assert r == pytest.approx(result["tokens_per_s"]["numpy/rnn"] / result["tokens_per_s"]["keras/rnn"])
    if "numpy/rnn" in keys:
        flops = bench.step_flops("rnn", c["batch"], c["seq_len"], c["units"], c["vocab"])["total"]
        assert result["numpy/rnn_gflops"] == pytest.approx(flops / (result["ms_per_step"]["numpy/rnn"] / 1e3) / 1e9)
        ratio = result["numpy/rnn_gflops"] / result["gemm_gflops"]
        assert result["ratios"]["numpy/rnn_gflops / gemm_gflops"] == pytest.approx(ratio)
    mingru = [k for k in keys if k in bench.MINGRU_KEYS]
    assert ("mingru" in result) == bool(mingru)
    for k in mingru:  # the fastest variant's layer step, and its ratio to the GRU layer measured beside it
        m, ref = result["mingru"], bench.MINGRU_REFERENCES[k]
        assert {*bench.MINGRU_VARIANTS[k], ref} <= set(m["ms_per_call"])
        assert m["fastest"][k] == min(bench.MINGRU_VARIANTS[k], key=m["ms_per_call"].get)
        assert result["ms_per_step"][k] == pytest.approx(m["ms_per_call"][m["fastest"][k]])
        assert result["tokens_per_s"][k] == pytest.approx(c["batch"] * c["seq_len"] / result["ms_per_step"][k] * 1e3)
        assert result["ratios"][f"{k} / {ref} layer"] == pytest.approx(m["ms_per_call"][ref] / result["ms_per_step"][k])


def test_flop_formulas():
    """2·B·(D+H)·H per step forward for the vanilla cell, four times for the LSTM, three for the GRU; the step's
    products add up."""
    assert bench.cell_flops("rnn", 64, 80, 256) == 2 * 64 * (80 + 256) * 256
    assert bench.cell_flops("lstm", 3, 5, 7) == 4 * bench.cell_flops("rnn", 3, 5, 7)
    assert bench.cell_flops("gru", 3, 5, 7) == 3 * bench.cell_flops("rnn", 3, 5, 7)
    B, T, H, V = 64, 100, 256, 80
    rnn = bench.step_flops("rnn", B, T, H, V)
    assert rnn["total"] == 6 * B * T * H * H + 6 * B * T * H * V + 2 * B * T * V * H
    assert rnn["total"] == sum(v for k, v in rnn.items() if k != "total")
    lstm = bench.step_flops("lstm", B, T, H, V)
    assert lstm["total"] == 6 * B * T * H * 4 * H + 6 * B * T * H * V + 2 * B * T * V * 4 * H
    assert bench.cell_flops("rnn", 2, 3, 5) == 2 * 2 * 8 * 5
    assert bench.step_flops("rnn", 1, 1, 1, 1)["total"] == 14
    with pytest.raises(ValueError, match="kind must be one of 'rnn', 'lstm', 'gru', got 'tanh'"):
        bench.cell_flops("tanh", 1, 1, 1)
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        bench.step_flops("rnn", 0, 1, 1, 1)
    for bad in ({"kind": "tanh"}, {"batch": 0}, {"units": 2.5}, {"vocab": True}):
        args = {"kind": "rnn", "batch": 1, "seq_len": 1, "units": 1, "vocab": 1, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            bench.step_flops(**args)


def test_select_keys():
    assert bench.select_keys() == list(bench.KEYS) and len(bench.KEYS) == 14
    assert bench.select_keys("numpy/*") == ["numpy/rnn", "numpy/lstm", "numpy/gru", "numpy/mingru"]
    assert bench.select_keys("*/mingru") == ["numpy/mingru", "tf/mingru"]
    assert bench.select_keys("keras/lstm, tf*/rnn") == ["tf/rnn", "tf-xla/rnn", "keras/lstm"]
    for bad in ("jax/*", "", " , "):
        with pytest.raises(ValueError, match="only"):
            bench.select_keys(bad)


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "--batch-size: expected a positive integer"),
    (["--busy", "0"], "--busy: expected positive integers separated by commas"),
    (["--busy", "1,x"], "--busy: expected positive integers"),
    (["--seq-len", "x"], "--seq-len: expected a positive integer"),
    (["--units", "-3"], "--units"),
    (["--warmup", "-1"], "--warmup: expected a non-negative integer"),
    (["--blas-threads", "0"], "--blas-threads"),
    (["--tf-threads", "x"], "--tf-threads: expected a positive integer"),
    (["--only", "jax/*"], "matches none of"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_bad_options_exit_2_naming_the_option(argv, message, capsys):
    "Bad options are refused before anything is timed: argparse's exit status 2 and a message naming the option."
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: rnn-tutorial bench" in err and message in err


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--batch-size", "--busy", "--seq-len", "--units", "--vocab", "--repeats", "--warmup", "--only",
                "--quick", "--json", "--blas-threads", "--tf-threads"):
        assert opt in out


def test_numpy_only_run_in_process(tmp_path, capsys):
    "A tiny NumPy-only run through `main`: one JSON object on stdout, progress on stderr, the same object in --output."
    out = tmp_path / "sub" / "b.json"
    assert bench.main(["--json", "--only", "numpy/*", "--batch-size", "2", "--seq-len", "3", "--units", "4",
                       "--vocab", "5", "--repeats", "2", "--warmup", "0", "--blas-threads", "1",
                       "--output", str(out)]) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert "numpy/rnn" in cap.err and "gemm" in cap.err and "numpy minGRU loop" in cap.err
    check_schema(result, ["numpy/rnn", "numpy/lstm", "numpy/gru", "numpy/mingru"])
    assert result["ratios"].keys() == {"numpy/rnn_gflops / gemm_gflops", "numpy/mingru / numpy GRU layer"}
    assert set(result["mingru"]["ms_per_call"]) == {*bench.MINGRU_VARIANTS["numpy/mingru"], "numpy GRU"}
    assert "tensorflow" not in result["config"]["machine"]
    assert json.loads(out.read_text()) == result
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.json"]  # written atomically: no temporary file left
    assert result["config"]["machine"]["blas"]["threads"] in (1, None)  # measured inside --blas-threads 1


def test_mingru_keys_quick(capsys):
    """Both minGRU keys at tiny sizes: the faster of loop and scan in NumPy and in TF, each against the GRU layer
    timed beside it, and the table's minGRU row."""
    result = bench.run_benchmark(batch=2, seq_len=5, units=4, repeats=1, warmup=1, only="*/mingru", log=lambda m: None)
    check_schema(result, ["numpy/mingru", "tf/mingru"])
    assert set(result["ratios"]) == {"numpy/mingru / numpy GRU layer", "tf/mingru / keras GRU layer",
                                     "mingru / keras GRU layer"}
    ms = result["mingru"]["ms_per_call"]
    best = min(result["ms_per_step"][k] for k in bench.MINGRU_KEYS)
    assert result["ratios"]["mingru / keras GRU layer"] == pytest.approx(ms["keras GRU"] / best)
    assert "mingru / keras GRU layer" in result["targets"]
    table = bench.format_table(result)
    assert "mingru*" in table and "one layer's forward and backward" in table


def test_table_output(capsys):
    # --batch, the old spelling: argparse accepts it as an abbreviation of --batch-size
    assert bench.main(["--only", "numpy/rnn", "--batch", "2", "--seq-len", "2", "--units", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("B=2 T=2 H=3 V=80") and "numpy/rnn_gflops / gemm_gflops" in out
    assert "target" not in out and "MET" not in out  # verdicts against the targets stay in the JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_blas_threads_policy_restores():
    "`blas_threads()` applies the policy (one thread) and restores the count before it, even on an exception."
    before = bench.blas_info()["threads"]
    if before is None: pytest.skip("no BLAS found by threadpoolctl: thread count unknown")
    with bench.blas_threads():
        assert bench.blas_info()["threads"] == bench.BLAS_THREADS == 1
        with bench.blas_threads(2): assert bench.blas_info()["threads"] == 2
        assert bench.blas_info()["threads"] == 1
    assert bench.blas_info()["threads"] == before
    with pytest.raises(KeyError):
        with bench.blas_threads(1): raise KeyError("inside")
    assert bench.blas_info()["threads"] == before


def _exited(pid):
    "True once process `pid` has ended (gone, or a zombie its parent has not reaped yet)."
    try: return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError): return True


def _wait_exited(pids, seconds=5.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not all(_exited(p) for p in pids): time.sleep(0.05)
    return all(_exited(p) for p in pids)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
def test_busy_load_leaves_no_process():
    """The busy processes run inside the block and are ended when it exits, normally or by an exception; each ends
    itself after its time, and when the process that started them dies."""
    with bench.busy_load(2) as pids:
        assert len(pids) == 2 and not any(_exited(p) for p in pids)
    assert all(_exited(p) for p in pids)
    with pytest.raises(RuntimeError, match="inside"):
        with bench.busy_load(1) as pids:
            raise RuntimeError("inside")
    assert all(_exited(p) for p in pids)
    with bench.busy_load(0) as pids: assert pids == []
    with bench.busy_load(1, seconds=0.3) as pids:  # bounded: gone after its time, before the block ends
        assert _wait_exited(pids)
    code = ("import os, time, rnn_tutorial.bench as b\n"
            "with b.busy_load(1) as pids:\n"
            "    print(pids[0], flush=True); os.kill(os.getpid(), 9)")  # killed: no finally runs
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and _wait_exited([int(proc.stdout)]), "a busy process outlived its parent"
    for bad, msg in (({"n": -1}, "n must be an integer >= 0, got -1"), ({"n": 1, "seconds": 0}, "seconds")):
        with pytest.raises(ValueError, match=msg):
            with bench.busy_load(**bad): pass


def test_busy_run_reports_both(capsys):
    "`--busy 1`: the quiet figures, then the busy ones with busy / quiet for every implementation; no process left."
    before = set(os.listdir("/proc")) if Path("/proc").exists() else set()
    assert bench.main(["--json", "--only", "numpy/rnn,numpy/lstm", "--batch-size", "2", "--seq-len", "3", "--units",
                       "4", "--repeats", "1", "--warmup", "0", "--busy", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    check_schema(result, ["numpy/rnn", "numpy/lstm"])
    (entry,) = result["busy"]
    assert entry["processes"] == 1 and list(entry["tokens_per_s"]) == ["numpy/rnn", "numpy/lstm"]
    for k, v in entry["tokens_per_s"].items():
        assert v > 0 and entry["busy_over_quiet"][k] == pytest.approx(v / result["tokens_per_s"][k])
        assert entry["targets"][f"{k} busy / quiet"]["met"] == (entry["busy_over_quiet"][k] >= 0.8)
    assert "--busy 1" in result["command"]
    table = bench.format_table(result)
    assert "beside 1 busy process(es)" in table
    if before:
        children = [p for p in set(os.listdir("/proc")) - before if p.isdigit()
                    and Path(f"/proc/{p}/stat").exists() and f" {os.getpid()} " in Path(f"/proc/{p}/stat").read_text()]
        assert not [p for p in children if not _exited(int(p))], "a busy process was left running"


def test_busy_counts_parse():
    assert bench._busy_counts("1,2") == [1, 2]
    assert bench._busy_counts("auto") == [bench.usable_cores()]
    assert bench.make_parser().parse_args(["--busy"]).busy == [bench.usable_cores()]
    assert bench.make_parser().parse_args([]).busy is None


def test_backend_speeds():
    "Both backends' tokens/s at tiny sizes within the budget, and which is faster; bad sizes named."
    t0 = time.perf_counter()
    s = bench.backend_speeds(0.4, kind="rnn", batch=2, seq_len=3, units=4, vocab=5)
    assert time.perf_counter() - t0 < 60
    assert s["numpy"] > 0 and s["tf"] > 0 and s["faster"] == max(("numpy", "tf"), key=s.get)
    assert s["ratio"] == pytest.approx(s["numpy"] / s["tf"]) and (s["batch"], s["seq_len"]) == (2, 3)
    for bad, msg in (({"kind": "elman"}, "kind must be one of"), ({"units": 0}, "units must be an integer >= 1"),
                     ({"seconds": -1}, "seconds")):
        with pytest.raises(ValueError, match=msg):
            bench.backend_speeds(**bad)


def test_numpy_steps_train_the_same_task():
    "Every NumPy step starts near ln V nats (uniform guessing) and lowers the loss on a repeated batch."
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 7, (2, 2, 5))
    for kind in CELL_GATES:
        step = bench.make_step(f"numpy/{kind}", 8, 7, lr=0.05)
        first = step(x, y)
        assert abs(first - math.log(7)) < 0.5
        for _ in range(10): last = step(x, y)
        assert last < first
    with pytest.raises(ValueError, match="key must be one of"):
        bench.make_step("numpy/elman", 8, 7)


def test_quick_json_command():
    """`python -m rnn_tutorial.bench --json --quick` (one timed step each here): exactly one JSON object on stdout, all
    fourteen keys."""
    proc = subprocess.run([sys.executable, "-m", "rnn_tutorial.bench", "--json", "--quick", "--repeats", "1",
                           "--warmup", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the whole of stdout is one object
    check_schema(result)
    c = result["config"]
    assert (c["batch"], c["seq_len"], c["units"], c["vocab"], c["repeats"]) == (16, 25, 64, 80, 1)
    assert "tensorflow" in c["machine"] and c["machine"]["devices"]
    assert set(result["ratios"]) == set(RATIOS) and set(result["targets"]) == set(bench.TARGETS)
    assert "keras/lstm" in proc.stderr


def test_saved_full_run():
    """The saved run the chapter shows ships with the package, has the full schema of the twelve character-model
    keys (it was made before the minGRU keys existed) and the default sizes."""
    result = json.loads(SAVED.read_text())
    check_schema(result, bench.CHAR_KEYS)
    c = result["config"]
    assert (c["batch"], c["seq_len"], c["units"], c["vocab"]) == (64, 100, 256, 80)
    assert set(result["ratios"]) == set(CHAR_RATIOS)


def test_saved_mingru_run():
    "The saved minGRU run the chapter shows: both minGRU keys beside the GRU's, the default sizes, one thread each."
    result = json.loads(SAVED_MINGRU.read_text())
    keys = ["numpy/gru", "keras/gru", "numpy/mingru", "tf/mingru"]
    check_schema(result, keys)
    c = result["config"]
    assert (c["batch"], c["seq_len"], c["units"], c["vocab"]) == (64, 100, 256, 80)
    assert set(result["ratios"]) == {"numpy/gru / keras/gru", *MINGRU_RATIOS}
    assert c["machine"]["tf_threads"] == {"intra_op": 1, "inter_op": 1} and c["machine"]["blas"]["threads"] == 1
    assert "--only numpy/gru,keras/gru,*/mingru" in result["command"]


def test_module_imports_without_tensorflow():
    "The benchmark's NumPy half and its command-line parsing need no TensorFlow: it is imported only to time TF."
    code = ("import sys, rnn_tutorial.bench as b; b.select_keys('numpy/*'); b.make_parser(); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sizes_are_checked_with_the_argument_named():
    for call, msg in ((lambda: bench.gemm_gflops(batch=0), "batch must be an integer >= 1, got 0"),
                      (lambda: bench.time_step(lambda x, y: 0.0, 2, 3, 5, repeats=True),
                       "repeats must be an integer >= 1"),
                      (lambda: bench.run_benchmark(only="numpy/rnn", warmup=-1),
                       "warmup must be an integer >= 0, got -1"),
                      (lambda: bench.blas_threads(1.5).__enter__(), "threads must be an integer >= 1, got 1.5"),
                      (lambda: bench.make_step("numpy/rnn", 0, 5), "units must be an integer >= 1, got 0")):
        with pytest.raises(ValueError, match=msg):
            call()
