"""Fuzz the loaders: generated metadata, arrays and bytes written to files and given to every loader of the data,
NumPy, Keras and persistence modules. The outcome must be a success or one line of our own error types
(`ValueError`, of which `FormatError` is one, or `FileNotFoundError`), never another exception and never a write."""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rnn_tutorial.checks import check_choice, check_int
from rnn_tutorial.data import Vocab
from rnn_tutorial.numpy_rnn import load_params
from rnn_tutorial.persist import read_json, read_npz, validate_arrays, validate_meta

FUZZ = settings(deadline=None, derandomize=True, max_examples=60,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
array_names = st.sampled_from(["w", "b", "meta.json", "params/w", "a", "a/b", "a/b/c", "", "x" * 40])
arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, "U3",
                                     np.complex64]),
                    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
                    elements=None)


def snapshot(d:Path) -> dict:
    "Every file under `d` with its size and modification time"
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


def outcome(load, d:Path):
    "Call `load()`; a success or one line of our own error type, and nothing written under `d`"
    before = snapshot(d)
    try: result = load()
    except (ValueError, FileNotFoundError) as e:
        assert str(e) and "\n" not in str(e), repr(e)
        result = e
    assert snapshot(d) == before, "a loader wrote a file"
    return result


def write_npz_raw(path:Path, arrays:dict, meta_bytes:bytes|None):
    "An .npz holding `arrays` and, if given, `meta_bytes` as its meta.json array"
    if meta_bytes is not None: arrays = {**arrays, "meta.json": np.frombuffer(meta_bytes, np.uint8)}
    buf = io.BytesIO()
    np.savez(buf, **{k.replace("/", "_SLASH_") if k == "" else k: v for k, v in arrays.items()})
    path.write_bytes(buf.getvalue())


# --- persist ------------------------------------------------------------------------------------------------------

SCHEMA = {"units": (check_int,), "cell": (check_choice, ("rnn", "lstm", "gru")), "step": (check_int, 0), "note": str}


@FUZZ
@given(meta=st.one_of(json_values, st.dictionaries(st.sampled_from(["format", "version", "units", "cell", "step",
                                                                     "note", "other"]), json_values, max_size=7)),
       named=st.dictionaries(array_names, arrays, max_size=3), raw=st.booleans(), junk=st.binary(max_size=40))
def test_read_npz_never_fails_otherwise(tmp_path, meta, named, raw, junk):
    path = tmp_path / "f.npz"
    meta_bytes = junk if raw else json.dumps(meta).encode()
    write_npz_raw(path, {k: v for k, v in named.items() if k != "meta.json"}, meta_bytes)
    for kwargs in ({}, {"fmt": "demo"}, {"fmt": "demo", "schema": SCHEMA, "optional": ("note",)}):
        got = outcome(lambda: read_npz(path, noun="demo file", **kwargs), tmp_path)
        if not isinstance(got, Exception) and "schema" in kwargs:
            _, m = got
            assert set(m) <= {"format", "version", *SCHEMA} and isinstance(m["units"], int) and m["units"] >= 1
            outcome(lambda: validate_arrays(got[0], {"w": ((3, m["units"]), "f")}, path, "demo file"), tmp_path)


@FUZZ
@given(data=st.binary(max_size=300), cut=st.integers(0, 400))
def test_read_npz_and_json_on_damaged_bytes(tmp_path, data, cut):
    good = io.BytesIO()
    np.savez(good, w=np.ones(3), **{"meta.json": np.frombuffer(b'{"format": "demo", "version": 1}', np.uint8)})
    for i, blob in enumerate((data, good.getvalue()[:cut], good.getvalue()[:cut] + data)):
        (tmp_path / f"{i}.npz").write_bytes(blob)
        outcome(lambda: read_npz(tmp_path / f"{i}.npz", "demo"), tmp_path)
        outcome(lambda: read_json(tmp_path / f"{i}.npz"), tmp_path)
        outcome(lambda: load_params(tmp_path / f"{i}.npz"), tmp_path)


@FUZZ
@given(meta=json_values)
def test_validate_meta_on_any_json(tmp_path, meta):
    got = outcome(lambda: validate_meta(meta, SCHEMA, tmp_path / "m.json", optional=("note", "step")), tmp_path)
    if not isinstance(got, Exception): assert got["cell"] in ("rnn", "lstm", "gru")


# --- numpy_rnn ----------------------------------------------------------------------------------------------------

@FUZZ
@given(named=st.dictionaries(array_names, arrays, min_size=1, max_size=4))
def test_load_params_on_generated_arrays(tmp_path, named):
    path = tmp_path / "p.npz"
    write_npz_raw(path, named, None)
    got = outcome(lambda: load_params(path), tmp_path)
    if not isinstance(got, Exception):
        leaves = []
        def walk(t):
            for v in t.values(): walk(v) if isinstance(v, dict) else leaves.append(v)
        walk(got)
        assert all(a.dtype.kind in "biuf" and (a.dtype.kind != "f" or np.isfinite(a).all()) for a in leaves)


# --- data: the vocabulary -----------------------------------------------------------------------------------------

GOOD_VOCAB = Vocab("hello world", unknown="?").to_dict()


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["format", "version", "chars", "unknown", "extra"]),
                               json_values | st.text(max_size=12), max_size=3),
       drop=st.sets(st.sampled_from(sorted(GOOD_VOCAB)), max_size=2), whole=st.none() | json_values,
       size=st.none() | st.integers(1, 20))
def test_vocab_load_on_generated_dicts(tmp_path, changes, drop, whole, size):
    d = {k: v for k, v in {**GOOD_VOCAB, **changes}.items() if k not in drop}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(d if whole is None else whole))
    got = outcome(lambda: Vocab.load(path, vocab_size=size), tmp_path)
    if not isinstance(got, Exception):
        assert size is None or len(got) == size
        assert Vocab.from_dict(got.to_dict()) == got and got.decode(got.encode(got.chars)) == got.chars


# --- keras_layers: the .keras loader ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    from rnn_tutorial.keras_layers import save_keras_model
    from rnn_tutorial.tf_rnn import make_layer
    from rnn_tutorial.tf_setup import import_tensorflow
    _, keras = import_tensorflow()
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(6, 3), make_layer("gru", 2),
                              keras.layers.Dense(2)])
    return save_keras_model(model, tmp_path_factory.mktemp("keras") / "good.keras").read_bytes()


def _paths(tree, prefix=()):
    "Paths to every node of a JSON tree"
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items: yield from _paths(v, prefix + (k,))


@settings(FUZZ, max_examples=25)
@given(meta=st.none() | json_values | st.dictionaries(st.sampled_from(["keras_version", "date_saved", "x"]),
                                                      json_values, max_size=3),
       pick=st.integers(0, 10_000), value=json_values | st.sampled_from(["os", "Lambda", "TFSMLayer", "eval"]),
       members=st.dictionaries(st.sampled_from(["config.json", "model.weights.h5", "assets/x", "evil.py"]),
                               st.binary(max_size=20), max_size=1))
def test_load_keras_model_on_edited_archives(tmp_path, keras_file, meta, pick, value, members):
    from rnn_tutorial.keras_layers import load_keras_model
    with zipfile.ZipFile(io.BytesIO(keras_file)) as z: files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    paths = list(_paths(config))[1:]
    *parent, last = paths[pick % len(paths)]
    node = config
    for k in parent: node = node[k]
    node[last] = value
    files["config.json"] = json.dumps(config).encode()
    if meta is not None: files["metadata.json"] = json.dumps(meta).encode()
    files.update(members)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items(): z.writestr(n, b)
    outcome(lambda: load_keras_model(path), tmp_path)


def test_deeply_nested_json_is_a_format_error_not_a_recursion_error(tmp_path):
    "JSON nested deeper than Python's parser recurses (100,000 brackets) is a damaged file, in every JSON reader"
    from rnn_tutorial.numpy_train import NUMPY_MODEL_FORMAT, load_model
    from rnn_tutorial.persist import FormatError
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    with pytest.raises(FormatError, match="deep.json"): read_json(tmp_path / "deep.json")
    meta = np.frombuffer(deep.encode(), dtype=np.uint8)
    np.savez(tmp_path / "deep.npz", **{"meta.json": meta})
    with pytest.raises(FormatError, match="deep.npz"): read_npz(tmp_path / "deep.npz", NUMPY_MODEL_FORMAT, 1, "model")
    with pytest.raises(FormatError): load_model(tmp_path / "deep.npz")
