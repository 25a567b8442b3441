"""Fuzz tests of issue 17 (hypothesis): generated argument lists given to the command's `main` in process, and
generated damage to the metadata and arrays of a TensorFlow trainer's checkpoint. Every outcome must be a success or a
clear error of ours: exit status 0 or 2 with one line on stderr, or `persist.FormatError`; never a traceback, an exit
status of 1, or another exception. Settings are deterministic (`derandomize=True`) so CI sees the same examples."""
import contextlib
import io
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnn_tutorial import cli
from rnn_tutorial.data import language_reference
from rnn_tutorial.persist import FormatError, write_npz

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def _inside(path: Path):
    "Run in `path` (the commands take relative paths)"
    old = Path.cwd()
    os.chdir(path)
    try: yield
    finally: os.chdir(old)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    "A scratch directory with a small text, a tiny NumPy model `m`, a foreign directory and an empty one"
    d = tmp_path_factory.mktemp("fuzz")
    (d / "text.txt").write_text(language_reference()[:6000], encoding="utf-8")
    (d / "binary.bin").write_bytes(bytes(range(256)))
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("mine\n")
    (d / "empty").mkdir()
    with _inside(d), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["train", "--text", "text.txt", "--backend", "numpy", "--units", "4", "--batch-size", "4",
                         "--seq-len", "8", "--steps", "3", "--eval-every", "0", "--out", "m"]) == 0
    return d


PATHS = st.one_of(st.sampled_from(["text.txt", "binary.bin", "m", "foreign", "empty", "nowhere", "m/config.json",
                                   "text.txt/x", "/proc/rnn-tutorial-fuzz", ".", "..", "", "a\x00b", "\udcff",
                                   "m/../m", "new/deeper/run"]),
                  st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1,
                          max_size=6).filter(lambda s: s not in (".", ".."))
                  .map(lambda s: "out-" + s))  # fresh names inside the scratch directory only
NUMBERS = st.one_of(st.sampled_from(["0", "1", "2", "3", "-1", "0.5", "1e999", "nan", "inf", "-inf", "1e-320",
                                     "10000000000", "9" * 30, "0x10", "1_000", " 3", "\u4e09", ""]),
                    st.integers(-10**15, 10**15).map(str), st.floats().map(repr), st.text(max_size=5))
VALUES = {"--text": PATHS, "--out": PATHS, "--model": PATHS,
          "--corpus": st.sampled_from(["language-reference", "wikipedia", ""]),
          "--backend": st.sampled_from(["numpy", "tf", "torch", ""]),
          "--cell": st.sampled_from(["rnn", "lstm", "gru", "mingru", "minlstm", "transformer"]),
          "--txt": PATHS, "--batch": NUMBERS,  # misspelled: refused with the closest option
          "--prime": st.text(max_size=6), "--resume": None, "--overwrite": None, "--json": None, "--help": None,
          "--init-from": PATHS, "--prime-file": PATHS, "--tensorboard": PATHS,  # issue 18's options
          "--weights": st.sampled_from(["best", "last", "first", ""]),
          "--unknown": st.sampled_from(["replace", "refuse", "ignore"]),
          "--lr-schedule": st.sampled_from(["constant", "cosine", "step", "linear"]),
          "--size": st.sampled_from(["small", "medium", "large", "huge"]),
          "--device": st.sampled_from(["cpu", "gpu", "tpu"]),
          "--distribute": st.sampled_from(["mirrored", "multi-worker", "ring"])}
NUMBER_FLAGS = ["--valid-frac", "--units", "--seq-len", "--batch-size", "--lr", "--seed", "--layers", "--steps",
                "--minutes", "--clip", "--eval-every", "--eval-chars", "--checkpoint-every", "--progress-every",
                "--length", "--temperature", "--top-k", "--beam", "--early-stop", "--warmup", "--sample-every",
                "--num-samples", "--dropout"]
FLAGS = sorted([*VALUES, *NUMBER_FLAGS])


def _option(flag):
    "A flag and its value (or none), as argument strings"
    values = VALUES.get(flag, NUMBERS)
    return st.just([flag]) if values is None else values.map(lambda v: [flag, v])


ARGV = st.tuples(
    st.sampled_from(["train", "demo", "generate", "evaluate", "info", "--help", "--version", "nope", ""]),
    st.lists(st.one_of(st.sampled_from(FLAGS).flatmap(_option), st.text(max_size=4).map(lambda t: [t])),
             max_size=7),
).map(lambda t: [t[0], *itertools.chain.from_iterable(t[1])])


def _quick_train_run(s, data, out, *args, **kwargs):
    "Instead of training: the tiny model copied into `out`, as a finished run would leave it"
    shutil.copytree(Path.cwd() / "m", out, dirs_exist_ok=True)
    return 0


def _main(argv):
    "`cli.main(argv)` with the exit status, stdout and stderr"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@settings(FUZZ, max_examples=150)
@given(argv=ARGV)
def test_generated_arguments_exit_0_or_2_with_one_line(work, argv):
    "Any argument list: exit 0, or exit 2 and one line on stderr; training, sampling and `info` are stubbed for speed"
    sample, beam = cli._sample_chars, cli.beam_continuation
    with _inside(work), pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "train_run", _quick_train_run)
        mp.setattr(cli, "cmd_info", lambda args: 0)  # no TensorFlow import
        mp.setattr(cli, "_sample_chars", lambda *a: itertools.islice(sample(*a), 3))  # at most 3 characters
        mp.setattr(cli, "beam_continuation", lambda m, v, p, length, b: beam(m, v, p, min(length, 3), b))
        mp.delenv(cli.DEBUG_ENV, raising=False)
        code, out, err = _main(argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code == 2:
        lines = err.splitlines()  # one error line, after one usage line for the parser's errors
        assert lines[-1].startswith("rnn-tutorial") and ": error: " in lines[-1], (argv, err)
        assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage: ")), (argv, err)


# --- the TensorFlow trainer's checkpoint --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf_checkpoint(tmp_path_factory):
    "A trainer of a tiny LSTM, and the arrays and metadata of its checkpoint after 4 steps"
    from rnn_tutorial.numpy_train import read_checkpoint
    from rnn_tutorial.tf_rnn import TFAdam
    from rnn_tutorial.tf_train import TF_CHECKPOINT_FORMAT, TF_CHECKPOINT_VERSION, TFTrainer, char_model
    ids = np.random.default_rng(0).integers(0, 7, 300)
    make = lambda: TFTrainer(char_model(7, 4, "lstm", seed=0), ids[:250], ids[250:], TFAdam(1e-2), batch_size=3,  # noqa: E731
                             seq_len=6, eval_every=2)
    path = tmp_path_factory.mktemp("tfckpt") / "c.npz"
    make().fit(4, checkpoint=path)
    arrays, meta = read_checkpoint(path, TF_CHECKPOINT_FORMAT, TF_CHECKPOINT_VERSION)
    return make(), arrays, meta, path.parent


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**130, 2**130) | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                    max_leaves=6)


def _paths(obj, prefix=()):
    "Every place in a JSON value: tuples of keys and indices"
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items: yield from _paths(v, (*prefix, k))


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_generated_checkpoint_damage_loads_or_raises_format_error(tf_checkpoint, data):
    "A field replaced, removed or added, or an array damaged: the load succeeds or raises `FormatError`, nothing else"
    trainer, arrays, meta, d = tf_checkpoint
    meta, arrays = json.loads(json.dumps(meta)), dict(arrays)
    kind = data.draw(st.sampled_from(["replace", "remove", "add", "array"]))
    if kind == "array":
        key = data.draw(st.sampled_from(sorted(arrays) + ["extra/0"]))
        a = arrays.get(key, np.zeros(1, np.float32))
        arrays[key] = data.draw(st.sampled_from([
            a * np.nan, a.astype(np.float64), a.reshape(-1), np.zeros((2, 2), a.dtype), a.astype(np.int32), a]))
    else:
        where = data.draw(st.sampled_from([p for p in _paths(meta) if p]))
        parent = meta
        for k in where[:-1]: parent = parent[k]
        if kind == "replace": parent[where[-1]] = data.draw(JSON)
        elif kind == "remove": del parent[where[-1]]
        elif isinstance(parent, dict): parent[data.draw(st.text(max_size=6))] = data.draw(JSON)
        else: parent.append(data.draw(JSON))
    path = d / "fuzzed.npz"
    write_npz(path, arrays, meta)
    try: trainer.load_checkpoint(path)
    except FormatError: pass
