"""Held-out bits per character after a fixed training time, for the CLI's defaults and its size presets.

Each run trains one configuration with the command's trainer (`rnn_tutorial.cli.make_trainer`) and, at each
time mark, evaluates the whole held-out text; the clock counts training steps only, not the evaluations.
One JSON object per run is appended to --out. Chapter 21 reads `rnn_tutorial/results/cli_quality.json`.

    .venv/bin/python tools/cli_quality.py --marks 2,5,10 --threads 2 --out rnn_tutorial/results/cli_quality.jsonl
"""
import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path


def stdlib_code(limit:int=600_000) -> str:
    "Python source that ships with every Python: the standard library's own modules, sorted, up to `limit` chars"
    import sysconfig
    root, parts, n = Path(sysconfig.get_paths()["stdlib"]), [], 0
    for p in sorted(root.glob("*.py")):
        t = p.read_text(encoding="utf-8", errors="replace")
        parts.append(t)
        n += len(t)
        if n >= limit: break
    return "".join(parts)[:limit]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="tf", choices=("tf", "numpy"))
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.0, help="TensorFlow backend only")
    ap.add_argument("--corpus", default="language-reference", choices=("language-reference", "stdlib-code"))
    ap.add_argument("--marks", default="2,5,10", help="minutes of training at which to evaluate")
    ap.add_argument("--threads", type=int, default=2, help="BLAS and TensorFlow intra-op threads")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    marks = [float(m) for m in a.marks.split(",")]
    import numpy  # noqa: F401  (loaded first: threadpoolctl limits the BLAS libraries already loaded)
    from threadpoolctl import threadpool_limits
    threadpool_limits(a.threads)
    from rnn_tutorial.tf_setup import import_tensorflow
    tf, _ = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from rnn_tutorial import numpy_train as nt
    from rnn_tutorial.cli import make_trainer, settings
    from rnn_tutorial.data import load_corpus, split_text
    corpus = load_corpus("language-reference", 0.1) if a.corpus == "language-reference" else \
        split_text(stdlib_code(), "stdlib-code", 0.1)
    data = nt.get_data(corpus)
    s = settings(data, a.backend, a.cell, a.units, a.layers, a.seq_len, a.batch_size, a.lr, 5.0, 0, 0, 10_000, 0.1,
                 **({"dropout": a.dropout} if a.dropout else {}))
    run = make_trainer(data, s)
    n_params = sum(int(v.size) for v in nt.flatten_tree(run.model.params).values()) \
        if hasattr(nt, "flatten_tree") else None
    points, trained, load = [], 0.0, [os.getloadavg()]
    for mark in marks:
        while trained < 60 * mark:
            t = time.perf_counter()
            loss = run.train_step()
            trained += time.perf_counter() - t
            if not math.isfinite(loss): break
        ev = run.evaluate(data.valid)
        points.append({"minutes": mark, "steps": run.step, "valid_bits_per_char": round(nt.bits(ev.nats), 4),
                       "train_loss_last100_bits": round(nt.bits(sum(r[1] for r in run.log["train"][-100:])
                                                               / len(run.log["train"][-100:])), 4)})
        load.append(os.getloadavg())
        print(json.dumps({"label": a.label, **points[-1]}), file=sys.stderr, flush=True)
    rec = {"label": a.label, "corpus": a.corpus, "backend": a.backend, "cell": a.cell, "units": a.units,
           "layers": a.layers, "dropout": a.dropout, "seq_len": a.seq_len, "batch_size": a.batch_size, "lr": a.lr,
           "threads": a.threads,
           "parameters": n_params, "vocab_size": len(data.vocab),
           "tokens_per_second": round(run.step * a.batch_size * a.seq_len / trained, 1), "points": points,
           "load_average": load, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    with open(a.out, "a") as f: f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
