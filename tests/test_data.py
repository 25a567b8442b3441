"""Tests of `rnn_tutorial.data` that do not belong in the chapter: every bad-input error path, the
downloader against a loopback HTTP server (nothing here reaches the internet), and property tests."""
import contextlib
import hashlib
import http.server
import json
import math
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_tutorial import data, persist
from rnn_tutorial.data import (CORPORA, Corpus, DownloadError, TBPTTBatches, Vocab, adding_problem,
                               bucket_by_length, copy_memory, copy_memory_baseline, download, fetch, get_cache_dir,
                               language_reference, load_corpus, load_series, pad_sequences, parity,
                               persistence_forecast, read_text, split_series, split_text, tinyshakespeare,
                               uniform_bits_per_char, unigram_bits_per_char, windows)

FIXTURE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40).encode()
FIXTURE_SHA = hashlib.sha256(FIXTURE).hexdigest()


# ---------------------------------------------------------------- loopback HTTP server

@contextlib.contextmanager
def serve(body: bytes, announced: int | None = None, status: int = 200):
    """Serve `body` at http://127.0.0.1:<free port>/input.txt; `announced` overrides the Content-Length
    header (a larger value and the connection closed after the body = a truncated download)."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if announced is None else announced))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/input.txt", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def refused_url() -> str:
    "A loopback URL with nothing listening (a port that was free a moment ago)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    "Loopback requests must never go through a proxy configured in the environment."
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------- downloads

def test_download_success(tmp_path):
    with serve(FIXTURE) as (url, requests):
        path = download(url, tmp_path / "c" / "input.txt", FIXTURE_SHA, size=len(FIXTURE), timeout=10)
    assert path == tmp_path / "c" / "input.txt"
    assert path.read_bytes() == FIXTURE
    assert requests == ["/input.txt"]
    assert leftovers(tmp_path / "c") == ["input.txt"]  # no temporary file left


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    with serve(FIXTURE) as (url, _):
        with pytest.raises(ValueError, match="sha256 .* expected 0{64}"):
            download(url, tmp_path / "input.txt", "0" * 64, timeout=10)
    assert leftovers(tmp_path) == []


def test_download_size_mismatch_leaves_nothing(tmp_path):
    with serve(FIXTURE) as (url, _):
        with pytest.raises(ValueError, match=f"has {len(FIXTURE):,} bytes, expected {len(FIXTURE) + 1:,}"):
            download(url, tmp_path / "input.txt", FIXTURE_SHA, size=len(FIXTURE) + 1, timeout=10)
    assert leftovers(tmp_path) == []


def test_download_connection_refused_leaves_nothing(tmp_path):
    with pytest.raises(DownloadError, match="could not download http://127.0.0.1"):
        download(refused_url(), tmp_path / "input.txt", FIXTURE_SHA, timeout=10)
    assert leftovers(tmp_path) == []
    assert issubclass(DownloadError, ConnectionError)


def test_download_truncated_body_leaves_nothing(tmp_path):
    half = FIXTURE[: len(FIXTURE) // 2]
    with serve(half, announced=len(FIXTURE)) as (url, _):
        with pytest.raises(DownloadError, match=f"cut short: received {len(half):,} of {len(FIXTURE):,} bytes"):
            download(url, tmp_path / "input.txt", FIXTURE_SHA, size=len(FIXTURE), timeout=10)
    assert leftovers(tmp_path) == []


def test_download_http_error(tmp_path):
    with serve(b"nope", status=404) as (url, _):
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(url, tmp_path / "input.txt", FIXTURE_SHA, timeout=10)
    assert leftovers(tmp_path) == []


def test_download_keeps_old_file_when_new_one_is_bad(tmp_path):
    target = tmp_path / "input.txt"
    target.write_bytes(b"old")
    with serve(FIXTURE) as (url, _):
        with pytest.raises(ValueError):
            download(url, target, "1" * 64, timeout=10)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["input.txt"]


def test_fetch_downloads_once_then_works_offline(tmp_path):
    with serve(FIXTURE) as (url, requests):
        p1 = fetch("f.txt", url, FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, timeout=10)
        p2 = fetch("f.txt", url, FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, timeout=10)
    assert p1 == p2 == tmp_path / "f.txt" and p1.read_bytes() == FIXTURE
    assert len(requests) == 1  # the second call used the cache
    # the server is gone: cached data still loads, even without offline=True
    assert fetch("f.txt", refused_url(), FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path).read_bytes() == FIXTURE
    assert fetch("f.txt", refused_url(), FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, offline=True) == p1


def test_fetch_not_cached_and_offline(tmp_path):
    with pytest.raises(DownloadError, match=r"f.txt is not cached at .*f.txt and could not be downloaded"):
        fetch("f.txt", refused_url(), FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, timeout=10)
    with pytest.raises(DownloadError, match=rf"not cached at .* offline=True: copy the file \({len(FIXTURE):,} bytes, "
                                            rf"sha256 {FIXTURE_SHA}"):
        fetch("f.txt", refused_url(), FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, offline=True)
    assert leftovers(tmp_path) == []


def test_fetch_replaces_damaged_cache(tmp_path):
    (tmp_path / "f.txt").write_bytes(FIXTURE[:-1] + b"!")  # right size, wrong content
    with pytest.raises(DownloadError, match="is damaged"):
        fetch("f.txt", refused_url(), FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, offline=True)
    with serve(FIXTURE) as (url, requests):
        assert fetch("f.txt", url, FIXTURE_SHA, len(FIXTURE), cache_dir=tmp_path, timeout=10).read_bytes() == FIXTURE
    assert requests == ["/input.txt"]


def test_tinyshakespeare_offline_errors(tmp_path):
    with pytest.raises(DownloadError, match="tinyshakespeare.txt is not cached .* could not be downloaded"):
        tinyshakespeare(cache_dir=tmp_path, url=refused_url())
    with pytest.raises(DownloadError, match="1,115,394 bytes, sha256 86c4e6aa9db7"):
        load_corpus("tinyshakespeare", cache_dir=tmp_path, offline=True)
    with serve(FIXTURE) as (url, _):  # a server with the wrong file: checksum error, nothing cached
        with pytest.raises(ValueError, match="expected 1,115,394"):
            tinyshakespeare(cache_dir=tmp_path, url=url)
    assert leftovers(tmp_path) == []


def test_tinyshakespeare_uses_verified_cache(tmp_path, monkeypatch):
    "A cached file with the expected checksum is used without any network (checksum patched to the fixture's)."
    monkeypatch.setattr(data, "TINYSHAKESPEARE_SHA256", FIXTURE_SHA)
    monkeypatch.setattr(data, "TINYSHAKESPEARE_SIZE", len(FIXTURE))
    (tmp_path / "tinyshakespeare.txt").write_bytes(FIXTURE)
    monkeypatch.setenv("RNN_TUTORIAL_CACHE", str(tmp_path))
    c = load_corpus("tinyshakespeare", offline=True)
    assert c.train + c.valid == FIXTURE.decode() and c.name == "tinyshakespeare"


def test_get_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RNN_TUTORIAL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert get_cache_dir() == tmp_path / "xdg" / "rnn-tutorial"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_cache_dir() == tmp_path / "home" / ".cache" / "rnn-tutorial"
    monkeypatch.setenv("RNN_TUTORIAL_CACHE", str(tmp_path / "env"))
    assert get_cache_dir() == tmp_path / "env"
    assert get_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_vocab_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    "Saving a vocabulary is atomic: a failure just before the rename leaves the old file and nothing else."
    Vocab("old").save(tmp_path / "v.json")
    renames = []

    def boom(src, dst):
        renames.append(Path(src).read_text())  # the new content was complete when the rename failed
        raise OSError("disk gone")

    monkeypatch.setattr(persist.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        Vocab("new").save(tmp_path / "v.json")
    assert '"chars": "enw"' in renames[0]
    assert leftovers(tmp_path) == ["v.json"] and Vocab.load(tmp_path / "v.json") == Vocab("old")


def test_download_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    "A verified download interrupted before its rename leaves the old file and no temporary file."
    target = tmp_path / "input.txt"
    target.write_bytes(b"old")

    def boom(src, dst):
        assert Path(src).read_bytes() == FIXTURE
        raise KeyboardInterrupt

    monkeypatch.setattr(persist.os, "replace", boom)
    with serve(FIXTURE) as (url, _):
        with pytest.raises(KeyboardInterrupt):
            download(url, target, FIXTURE_SHA, size=len(FIXTURE), timeout=10)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == ["input.txt"]


# ---------------------------------------------------------------- corpora and text files

def test_language_reference_default_corpus():
    c = load_corpus()
    assert c == load_corpus("language-reference")
    assert c.train + c.valid == language_reference()
    assert len(c.valid) == round(0.1 * (len(c.train) + len(c.valid)))
    assert "language-reference" in CORPORA


def test_unknown_corpus_name():
    with pytest.raises(ValueError, match="name must be one of 'language-reference', 'tinyshakespeare' or the path of "
                                         "an "
                                         "existing text file, got 'shakespeare'"):
        load_corpus("shakespeare")


def test_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="corpus 'x' is empty"):
        split_text("", "x")
    (tmp_path / "one.txt").write_text("a")
    with pytest.raises(ValueError, match="corpus 'one.txt' is empty or too short: it has 1 characters"):
        load_corpus(tmp_path / "one.txt")
    with pytest.raises(ValueError, match="text must be a str, got bytes"):
        split_text(b"bytes")
    with pytest.raises(ValueError, match="valid_frac must be a number strictly between 0 and 1, got 1.0"):
        split_text("abc", valid_frac=1.0)


def test_read_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.txt is empty: expected a non-empty text file"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ValueError, match=r"img.png looks like a binary file, not text: it has a NUL byte at byte "
                                         r"offset 8"):
        read_text(tmp_path / "img.png")
    (tmp_path / "bad.txt").write_bytes("abc\n".encode() + b"\xff\xfe" + b"tail")
    with pytest.raises(ValueError, match=r"bad.txt is not valid utf-8: cannot decode b'\\xff' at byte offset 4"):
        read_text(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="encoding must be a known text encoding, got 'klingon'"):
        read_text(tmp_path / "bad.txt", encoding="klingon")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="looks like a binary file"):  # a non-text file through load_corpus too
        load_corpus(str(tmp_path / "img.png"))


def test_read_text_encodings(tmp_path):
    (tmp_path / "l1.txt").write_bytes("Grüße\n".encode("latin-1"))
    assert read_text(tmp_path / "l1.txt", encoding="latin-1") == "Grüße\n"
    (tmp_path / "u16.txt").write_text("Grüße\n", encoding="utf-16")  # NUL bytes are fine in UTF-16
    assert read_text(tmp_path / "u16.txt", encoding="utf-16") == "Grüße\n"
    c = load_corpus(tmp_path / "u16.txt", encoding="utf-16", valid_frac=0.5)
    assert c == Corpus("u16.txt", "Grü", "ße\n")


# ---------------------------------------------------------------- vocabulary

def test_vocab_unknown_policy():
    v = Vocab("hello")
    assert v.chars == "ehlo" and len(v) == 4 and "h" in v and "z" not in v and "he" not in v
    with pytest.raises(ValueError, match=r"character 'z' \(U\+007A\) at position 3 of text is not in the vocabulary"):
        v.encode("helz")
    with pytest.raises(ValueError, match=r"'\\u200b' \(U\+200B\) at position 1"):
        v.encode("h\u200b")  # an invisible character is shown escaped
    with pytest.raises(ValueError, match=r"'\U0001F600' \(U\+1F600\) at position 0 .* \(2 unseen"):
        v.encode("\U0001F600z")
    vu = Vocab("hello", unknown="\ufffd")
    assert len(vu) == 5 and vu.decode(vu.encode("hexo")) == "he\ufffdo"
    assert Vocab("hello", unknown="h") == Vocab("hello", unknown="h") and len(Vocab("hello", unknown="h")) == 4


def test_vocab_bad_input():
    with pytest.raises(ValueError, match="chars must hold at least one character, got an empty text"):
        Vocab("")
    with pytest.raises(ValueError,
                       match="chars must be a str or an iterable of single characters, got the element 'ab'"):
        Vocab(["c", "ab"])
    with pytest.raises(ValueError, match="unknown must be a single character or None, got ''"):
        Vocab("ab", unknown="")
    v = Vocab("ab")
    with pytest.raises(ValueError, match="text must be a str, got bytes"):
        v.encode(b"ab")
    with pytest.raises(ValueError, match="id -1 at position 1 of ids is out of range: expected 0 <= id < 2"):
        v.decode([0, -1])
    with pytest.raises(ValueError, match=r"ids must be a 1-D array of integers, got shape \(2,\) and dtype float64"):
        v.decode([0.0, 1.0])


def test_vocab_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved vocabulary at .*missing.json"):
        Vocab.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(persist.FormatError, match="junk.json is not a valid saved vocabulary"):
        Vocab.load(tmp_path / "junk.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(persist.FormatError, match="list.json is not a valid saved vocabulary"):
        Vocab.load(tmp_path / "list.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(persist.FormatError, match="not a saved rnn-tutorial vocabulary"):
        Vocab.load(tmp_path / "other.json")
    d = Vocab("abc").to_dict()
    for chars, msg in (("cba", "code-point order"), ("aab", "distinct"), (["a"], "string")):
        (tmp_path / "v.json").write_text(json.dumps({**d, "chars": chars}))
        with pytest.raises(persist.FormatError, match=msg):
            Vocab.load(tmp_path / "v.json")
    (tmp_path / "v.json").write_text(json.dumps({**d, "unknown": "?"}))
    with pytest.raises(persist.FormatError, match="unknown symbol must be one of its chars"):
        Vocab.load(tmp_path / "v.json")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), min_size=1))
def test_vocab_round_trip_any_unicode(text):
    "Any Python string, lone surrogates and astral characters included, survives encode/decode."
    v = Vocab(text)
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert v.chars == "".join(sorted(set(text)))
    assert ids.min() >= 0 and ids.max() < len(v)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1), st.text(), st.characters(blacklist_categories=()))
def test_vocab_unseen_map_to_unknown(train, new, unknown):
    v = Vocab(train, unknown=unknown)
    expected = "".join(ch if ch in set(train) or ch == unknown else unknown for ch in new)
    assert v.decode(v.encode(new)) == expected
    if any(ch not in set(train) and ch != unknown for ch in new):
        with pytest.raises(ValueError, match="is not in the vocabulary"):
            Vocab(train).encode(new)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), min_size=1),
       st.one_of(st.none(), st.characters(blacklist_categories=())))
def test_vocab_json_round_trip(tmp_path_factory, text, unknown):
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    v = Vocab(text, unknown=unknown)
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.chars == v.chars and w.unknown == v.unknown and w.unknown_id == v.unknown_id
    assert path.read_bytes().isascii()
    assert np.array_equal(w.encode(text), v.encode(text))


# ---------------------------------------------------------------- baselines

def test_bits_per_char():
    assert uniform_bits_per_char(256) == 8.0
    assert math.isclose(unigram_bits_per_char([0, 1, 1, 1], [1], 3), -math.log2(4 / 7))
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1, got 0"):
        uniform_bits_per_char(0)
    with pytest.raises(ValueError, match="train_ids must hold ids in"):
        unigram_bits_per_char([0, 3], [0], 3)
    with pytest.raises(ValueError, match="valid_ids must be a 1-D array of integers"):
        unigram_bits_per_char([0], [[0]], 3)
    with pytest.raises(ValueError, match="valid_ids is empty"):
        unigram_bits_per_char([0], [], 3)


# ---------------------------------------------------------------- TBPTT batches

@settings(max_examples=60, deadline=None)
@given(st.integers(2, 3000), st.integers(1, 9), st.integers(1, 40), st.integers(0, 30))
def test_tbptt_continuity(N, B, T, offset):
    "Row b of batch k+1 continues row b of batch k exactly; y is x one token on; nothing is used twice."
    ids = np.arange(N) * 7 % 1000  # distinct-enough values; positions recovered from a parallel stream
    pos = np.arange(N)
    if B * T + 1 > N - offset:
        with pytest.raises(ValueError, match=rf"batch_size \* seq_len \+ 1 = {B} \* {T} \+ 1 = "):
            TBPTTBatches(ids, B, T, offset)
        return
    batches, where = TBPTTBatches(ids, B, T, offset), TBPTTBatches(pos, B, T, offset)
    assert len(batches) == ((N - offset - 1) // B) // T >= 1
    prev = None
    for k, ((x, y), (px, py)) in enumerate(zip(batches, where)):
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == np.int32
        assert np.array_equal(x, ids[px]) and np.array_equal(y, ids[py])
        assert np.array_equal(py, px + 1)                         # next-token targets
        assert (np.diff(px, axis=1) == 1).all()                   # each row contiguous within the window
        if prev is not None:
            assert np.array_equal(px[:, 0], prev[:, -1] + 1)      # ... and across windows: state can be carried
        prev = px
    used = np.concatenate([px.ravel() for px, _ in where])
    assert len(np.unique(used)) == used.size and used.min() == offset
    assert used.size + batches.n_unused == N - offset
    X, Y = batches.arrays()
    assert np.array_equal(X[(len(batches) - 1) * B:], batches[-1][0]) and np.array_equal(Y[:B], batches[0][1])


def test_tbptt_bad_input():
    ids = np.arange(100)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1, got 0"):
        TBPTTBatches(ids, 4, 0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got -2"):
        TBPTTBatches(ids, -2, 5)
    with pytest.raises(ValueError, match="offset must be an integer >= 0, got -1"):
        TBPTTBatches(ids, 2, 5, offset=-1)
    with pytest.raises(ValueError, match=r"= 10 \* 10 \+ 1 = 101 tokens are needed for one batch, but ids has 100"):
        TBPTTBatches(ids, 10, 10)
    with pytest.raises(ValueError, match="tokens are needed for one batch, but ids has 0"):
        TBPTTBatches([], 1, 1)
    with pytest.raises(ValueError, match="ids must be a 1-D array of integers"):
        TBPTTBatches(np.zeros(100), 2, 5)
    b = TBPTTBatches(ids, 3, 5)
    with pytest.raises(IndexError, match="out of range"):
        b[len(b)]
    with pytest.raises(ValueError, match="batch index must be an integer, got slice"):
        b[0:2]
    with pytest.raises(ValueError, match="batch index must be an integer, got bool"):
        b[True]
    assert np.array_equal(b[-1][0], b[len(b) - 1][0])


# ---------------------------------------------------------------- padding and bucketing

@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-5, 5), min_size=1, max_size=12), min_size=1, max_size=20))
def test_pad_sequences_property(seqs):
    padded, mask = pad_sequences(seqs, pad_value=99)
    assert padded.shape == mask.shape == (len(seqs), max(map(len, seqs)))
    for row, m, s in zip(padded, mask, seqs):
        assert list(row[m]) == s and (row[~m] == 99).all()
        assert m[: len(s)].all() and not m[len(s):].any()  # right padding: real steps first


def test_pad_sequences_bad_input():
    with pytest.raises(ValueError, match="seqs is empty"):
        pad_sequences([])
    with pytest.raises(ValueError, match=r"seqs\[2\] has no steps: every sequence needs length >= 1"):
        pad_sequences([[1], [2], []])
    with pytest.raises(ValueError, match=r"seqs\[1\] has steps of shape \(3,\), but seqs\[0\] has \(2,\)"):
        pad_sequences([np.zeros((1, 2)), np.zeros((1, 3))])
    with pytest.raises(ValueError, match="max_len must be at least the longest sequence, 3"):
        pad_sequences([[1, 2, 3]], max_len=2)
    with pytest.raises(ValueError, match="max_len must be an integer >= 1, got 0"):
        pad_sequences([[1]], max_len=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=200), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_bucket_by_length_property(lengths, batch_size, seed):
    batches = bucket_by_length(lengths, batch_size, seed=seed)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))      # each index exactly once
    assert all(len(b) == batch_size for b in batches if len(b) != len(lengths) % batch_size)
    assert sum(len(b) != batch_size for b in batches) <= 1
    # the batches are runs of the sorted lengths: no batch's range overlaps another's interior
    ranges = sorted((min(np.asarray(lengths)[b]), max(np.asarray(lengths)[b])) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(ranges, ranges[1:]))
    assert [b.tolist() for b in batches] == [b.tolist() for b in bucket_by_length(lengths, batch_size, seed=seed)]


def test_bucket_by_length_bad_input():
    with pytest.raises(ValueError, match="lengths is empty"):
        bucket_by_length([], 2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        bucket_by_length([1, 2], 0)
    with pytest.raises(ValueError, match="lengths must be a 1-D array of integers"):
        bucket_by_length([[1, 2]], 1)


# ---------------------------------------------------------------- synthetic tasks

def test_adding_problem():
    X, y = adding_problem(20_000, 30, seed=3)
    assert X.shape == (20_000, 30, 2) and X.dtype == y.dtype == np.float32
    m = X[..., 1]
    assert (m[:, :15].sum(1) == 1).all() and (m[:, 15:].sum(1) == 1).all() and set(np.unique(m)) == {0.0, 1.0}
    assert np.allclose(y, (X[..., 0] * m).sum(1), atol=1e-6)
    assert abs(np.mean((y - 1) ** 2) - 1 / 6) < 0.01
    assert np.array_equal(adding_problem(4, 9, seed=5)[0], adding_problem(4, 9, seed=5)[0])
    assert not np.array_equal(adding_problem(4, 9, seed=5)[0], adding_problem(4, 9, seed=6)[0])
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2, got 1"):
        adding_problem(10, 1)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        adding_problem(0, 10)


def test_copy_memory():
    X, Y = copy_memory(500, delay=7, n_symbols=4, length=3, seed=1)
    assert X.shape == Y.shape == (500, 13) and X.dtype == np.int32
    assert ((X[:, :3] >= 1) & (X[:, :3] <= 4)).all() and (X[:, 3:9] == 0).all() and (X[:, 9] == 5).all()
    assert (X[:, 10:] == 0).all() and (Y[:, :10] == 0).all() and np.array_equal(Y[:, 10:], X[:, :3])
    assert math.isclose(copy_memory_baseline(100), 10 * math.log(8) / 120)
    assert math.isclose(copy_memory_baseline(7, 4, 3), 3 * math.log(4) / 13)
    for kwargs, msg in (({"delay": 0}, "delay must be"), ({"delay": 3, "n_symbols": 0}, "n_symbols must be"),
                        ({"delay": 3, "length": 0}, "length must be")):
        with pytest.raises(ValueError, match=msg):
            copy_memory(2, **kwargs)
    with pytest.raises(ValueError, match="delay must be an integer >= 1"):
        copy_memory_baseline(0)


def test_parity():
    X, y = parity(1000, 17, seed=2)
    assert X.shape == (1000, 17) and y.shape == (1000,) and set(np.unique(X)) == {0, 1}
    assert np.array_equal(y, np.bitwise_xor.reduce(X, axis=1))  # an independent definition: XOR of the bits
    assert 0.4 < y.mean() < 0.6 and y.dtype == np.int32
    assert np.array_equal(parity(1000, 17, seed=2)[0], X) and not np.array_equal(parity(1000, 17, seed=3)[0], X)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1"):
        parity(3, 0)


# ---------------------------------------------------------------- time series

def test_load_series():
    dates, values = load_series()
    assert len(dates) == len(values) == 1047 and values.dtype == np.float64 and np.isfinite(values).all()
    assert (np.diff(dates) > np.timedelta64(0, "D")).all()
    with pytest.raises(ValueError, match="name must be one of 'goog', got 'msft'"):
        load_series("msft")


def test_windows_and_persistence():
    s = np.arange(12.0) ** 2
    X, y = windows(s, input_len=4, horizon=3)
    assert X.shape == (6, 4) and y.shape == (6,)
    for i in range(6):
        assert np.array_equal(X[i], s[i:i + 4]) and y[i] == s[i + 4 + 3 - 1]
    assert np.array_equal(persistence_forecast(X), s[3:9])
    tr, va = split_series(s, 0.25)
    assert np.array_equal(np.concatenate([tr, va]), s) and len(va) == 3
    with pytest.raises(ValueError, match="input_len must be an integer >= 1, got 0"):
        windows(s, 0)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1, got 0"):
        windows(s, 2, 0)
    with pytest.raises(ValueError, match=r"series has 12 steps: too short .* \(needs at least 13\)"):
        windows(s, 10, 3)
    with pytest.raises(ValueError, match=r"series must be a numeric array of shape \(time,\) or \(time, features\)"):
        windows(np.zeros((3, 2, 2)), 1)
    with pytest.raises(ValueError, match="non-finite value at step 2"):
        windows(np.array([[0.0, 1], [2, 3], [4, np.inf]]), 1)
    with pytest.raises(ValueError, match="series has 0 steps"):
        windows([], 1)
    with pytest.raises(ValueError, match="series must have at least 2 steps"):
        split_series([1.0])
    with pytest.raises(ValueError, match="valid_frac must be a number strictly between 0 and 1"):
        split_series(s, 0)


def test_data_py_imports_only_numpy_and_stdlib():
    "The module itself must not pull in TensorFlow or matplotlib (matplotlib only inside load_series)."
    import subprocess
    import sys
    code = ("import sys, rnn_tutorial.data; "
            "print(sorted(m for m in ('tensorflow', 'matplotlib', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- checks moved out of chapter 00
# (they were `#| hide` cells of nbs/00_data.ipynb; the same assertions)

from fastcore.test import test_close as _close, test_eq as _eq, test_fail as _fail  # noqa: E402


def test_ch00_language_reference():
    text = language_reference()
    _eq(language_reference(), text)  # deterministic
    assert text.startswith('The "assert" statement') and text.endswith("\n")
    assert 300_000 < len(text) < 1_000_000


def test_ch00_split_text():
    _eq(split_text("ab"), Corpus("text", "a", "b"))
    _eq(split_text("abcdefghij", valid_frac=0.3).valid, "hij")
    _fail(lambda: split_text("", "mine"), contains="corpus 'mine' is empty")
    _fail(lambda: split_text("abc", valid_frac=0), contains="valid_frac")


def test_ch00_read_text_and_load_corpus(tmp_path):
    (tmp_path/"bin.dat").write_bytes(b"PK\x03\x04\x00\x00")
    _fail(lambda: read_text(tmp_path/"bin.dat"), contains="looks like a binary file")
    (tmp_path/"u16.txt").write_text("héllo", encoding="utf-16")
    _eq(read_text(tmp_path/"u16.txt", encoding="utf-16"), "héllo")
    (tmp_path/"notes.txt").write_bytes("Café au lait\n".encode("latin-1"))
    _eq(load_corpus(), split_text(language_reference(), "language-reference"))
    _fail(lambda: load_corpus("shakespear"),
          contains="name must be one of 'language-reference', 'tinyshakespeare' or the path of an existing text file, "
                   "got 'shakespear'")
    _eq(load_corpus(tmp_path/"notes.txt", encoding="latin-1").name, "notes.txt")
    _eq(load_corpus(str(tmp_path/"notes.txt"), encoding="latin-1").train, "Café au lait")


def test_ch00_vocab():
    _eq(Vocab(["b", "a", "b"]).chars, "ab")
    _eq(Vocab("ba", unknown="?").encode("abz"), np.array([1, 2, 0]))
    _eq(Vocab("ab").decode([]), "")
    _eq(Vocab("ab").encode(""), np.zeros(0, np.int32))
    _fail(lambda: Vocab(""), contains="chars must hold at least one character")
    _fail(lambda: Vocab("ab", unknown="xy"), contains="unknown must be a single character")
    _fail(lambda: Vocab("ab").encode("abc"), contains="'c' (U+0063) at position 2")
    _fail(lambda: Vocab("ab").decode([0, 2]), contains="id 2 at position 1")
    _fail(lambda: Vocab("ab").decode([[0]]), contains="ids must be a 1-D array of integers")


def _default_ids():
    corpus = load_corpus()
    vocab = Vocab(corpus.train)
    return vocab.encode(corpus.train), vocab.encode(corpus.valid), len(vocab)


def test_ch00_bits_per_char():
    train_ids, valid_ids, V = _default_ids()
    _close(uniform_bits_per_char(8), 3.0)
    _close(unigram_bits_per_char([0, 0, 1, 1], [0, 1], 2), 1.0)             # (2+1)/(4+2) = 1/2
    _close(unigram_bits_per_char([0, 0, 0], [1], 2), -math.log2(1 / 5))     # unseen id: (0+1)/(3+2)
    assert unigram_bits_per_char(train_ids, valid_ids, V) < uniform_bits_per_char(V)
    _fail(lambda: unigram_bits_per_char(train_ids, [], V), contains="valid_ids is empty")
    _fail(lambda: unigram_bits_per_char(train_ids, [V], V), contains="valid_ids must hold ids in [0, ")


def test_ch00_tbptt_batches():
    train_ids, _, _ = _default_ids()
    batches = TBPTTBatches(train_ids, batch_size=64, seq_len=100)
    # every token position used at most once per epoch, and stacked arrays keep the batch order
    seen = np.concatenate([x.ravel() for x, _ in batches])
    _eq(seen.size + batches.n_unused, train_ids.size)
    X_all, Y_all = batches.arrays()
    _eq(X_all[64:128], batches[1][0])
    _eq(Y_all[-64:], batches[-1][1])
    _eq(TBPTTBatches(np.arange(11), 2, 5).n_batches, 1)                # 2 * 5 + 1 = 11 tokens: exactly one batch
    _eq(TBPTTBatches(np.arange(20), 2, 3, offset=1)[0][0], [[1, 2, 3], [10, 11, 12]])
    _fail(lambda: TBPTTBatches(np.arange(10), 2, 5), contains="2 * 5 + 1 = 11 tokens are needed")
    _fail(lambda: TBPTTBatches(np.arange(10), 2, 0), contains="seq_len must be an integer >= 1")
    _fail(lambda: batches[len(batches)], contains="out of range")


def test_ch00_padding_and_buckets():
    p2, m2 = pad_sequences([np.ones((2, 3)), np.ones((1, 3))], pad_value=-1.0, max_len=4)
    _eq(p2.shape, (2, 4, 3))
    _eq(m2.sum(1), [2, 1])
    _eq(p2[1, 1:], -np.ones((3, 3)))
    _fail(lambda: pad_sequences([]), contains="seqs is empty")
    _fail(lambda: pad_sequences([[1], []]), contains="seqs[1] has no steps")
    _fail(lambda: pad_sequences([[1, 2]], max_len=1), contains="max_len must be at least the longest sequence, 2")
    lines = [line for line in load_corpus().train.split("\n") if line]
    buckets = bucket_by_length([len(line) for line in lines], 32, seed=0)
    _eq(np.sort(np.concatenate(buckets)), np.arange(len(lines)))
    _eq([len(b) for b in buckets if len(b) != 32], [len(lines) % 32])
    _eq([b.tolist() for b in bucket_by_length([3, 1, 2, 1], 2, shuffle=False)][1], [2, 0])
    _eq(len(bucket_by_length([5], 4)), 1)
    _fail(lambda: bucket_by_length([], 4), contains="lengths is empty")
    _fail(lambda: bucket_by_length([1, 2], 0), contains="batch_size must be an integer >= 1")


def test_ch00_synthetic_tasks():
    X, y = adding_problem(10_000, 100, seed=0)
    _eq(X[:, :, 1].sum(1), np.full(10_000, 2.0))
    assert (X[:, :50, 1].sum(1) == 1).all() and (X[:, 50:, 1].sum(1) == 1).all()
    _close(y, (X[:, :, 0] * X[:, :, 1]).sum(1), eps=1e-5)
    _eq(adding_problem(3, 2, seed=1)[0][:, :, 1], np.ones((3, 2)))
    _eq(adding_problem(5, 10, seed=7)[1], adding_problem(5, 10, seed=7)[1])  # seeded
    _fail(lambda: adding_problem(5, 1), contains="seq_len must be an integer >= 2")
    Xc, Yc = copy_memory(1000, delay=100, seed=0)
    probs = np.zeros(Yc.shape + (10,))
    probs[:, :-10, 0] = 1.0
    probs[:, -10:, 1:9] = 1 / 8
    _close(-np.log(np.take_along_axis(probs, Yc[..., None], -1)).mean(), copy_memory_baseline(100))
    _eq(Xc.shape, (1000, 120))
    _eq(Xc[:, 109], np.full(1000, 9))
    _eq(Yc[:, -10:], Xc[:, :10])
    assert (Xc[:, :10] >= 1).all() and (Xc[:, :10] <= 8).all()
    assert (Xc[:, 10:109] == 0).all() and (Yc[:, :110] == 0).all()
    _fail(lambda: copy_memory(1, delay=0), contains="delay must be an integer >= 1")
    Xp, yp = parity(10_000, 50, seed=0)
    _eq(yp, np.bitwise_xor.reduce(Xp, axis=1))
    _fail(lambda: parity(0, 5), contains="n must be an integer >= 1")


def test_ch00_windows_and_series():
    Xw, yw = windows(np.arange(10.0), 3, 2)
    _eq(Xw[0], [0, 1, 2])
    _eq(yw[0], 4)
    _eq(len(yw), 6)
    Xw2, yw2 = windows(np.arange(20.0).reshape(10, 2), 3)
    _eq(Xw2.shape, (7, 3, 2))
    _eq(Xw2[1, 0], [2, 3])
    _eq(yw2[0], [6, 7])
    _, prices = load_series()
    _eq([len(a) for a in split_series(prices, 0.2)], [838, 209])
    _fail(lambda: windows(np.arange(4.0), 3, 2), contains="needs at least 5")
    _fail(lambda: windows([1.0, np.nan, 2.0], 1), contains="non-finite value at step 1")
    _fail(lambda: load_series("sp500"), contains="name must be one of 'goog', got 'sp500'")


def test_vocab_load_refuses_what_to_dict_cannot_make(tmp_path):
    d = Vocab("abc", unknown="?").to_dict()
    cases = [({"chars": ""}, "non-empty string"), ({"chars": None}, "non-empty string"),
             ({"chars": "abb"}, "distinct"), ({"unknown": "z"}, "unknown symbol"), ({"unknown": 3}, "unknown symbol"),
             ({"version": True}, "not a saved rnn-tutorial vocabulary"), ({"version": 1.0}, "not a saved"),
             ({"extra": 1}, r"got unknown \['extra'\]")]
    for change, msg in cases:
        (tmp_path / "v.json").write_text(json.dumps({**d, **change}))
        with pytest.raises(persist.FormatError, match=msg):
            Vocab.load(tmp_path / "v.json")
    (tmp_path / "v.json").write_text(json.dumps({k: v for k, v in d.items() if k != "unknown"}))
    with pytest.raises(persist.FormatError, match=r"missing \['unknown'\]"):
        Vocab.load(tmp_path / "v.json")
    import stat
    old = os.umask(0o027)
    try: Vocab("abc", unknown="?").save(tmp_path / "v.json")
    finally: os.umask(old)
    assert stat.S_IMODE((tmp_path / "v.json").stat().st_mode) == 0o640  # the umask, not mkstemp's 0600
    assert len(Vocab.load(tmp_path / "v.json", vocab_size=4)) == 4
    with pytest.raises(persist.FormatError, match=r"v.json: .*must hold vocab_size = 5 characters, got 4"):
        Vocab.load(tmp_path / "v.json", vocab_size=5)
    with pytest.raises(persist.FormatError, match="distinct"):
        Vocab.from_dict({**d, "chars": "ba"})


def test_seeds_are_checked():
    calls = (lambda s: adding_problem(2, 4, seed=s), lambda s: copy_memory(2, 3, seed=s),
             lambda s: parity(2, 3, seed=s), lambda s: bucket_by_length([1, 2], 1, seed=s))
    for call in calls:
        call(None)
        for bad in (-1, 1.5, "3", True):
            with pytest.raises(ValueError, match="seed must be None or a non-negative integer, got"):
                call(bad)
