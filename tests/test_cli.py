"""The `irli` command, run as a user would: in a subprocess."""

import subprocess
import sys

import numpy as np
import pytest

from irli.io.datasets import synthetic, write_xvecs
from irli.kernels.exact import exact_knn


def irli_cmd(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "irli.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x, q = synthetic(2000, 8, 50, seed=5)
    np.save(d / "items.npy", x)
    write_xvecs(d / "queries.fvecs", q)
    write_xvecs(d / "truth.ivecs", exact_knn(x, q, 10, "cosine")[0].astype(np.int32))
    return d


@pytest.fixture(scope="module")
def built(files):
    irli_cmd("build", files / "items.npy", "-o", files / "idx", "--preset", "ivf-ltr",
             "--set", "n_buckets=16", "--set", "epochs=3", "--set", "n_train=500", "-q")
    return files / "idx"


@pytest.mark.parametrize("sub", ["", "build", "search", "eval", "info", "demo", "add", "remove", "compact", "shard", "serve"])
def test_help(sub):
    p = irli_cmd(*([sub] if sub else []), "--help")
    assert f"Usage: irli {sub}".strip() in p.stdout


def test_every_argument_and_option_has_help():
    from irli.cli import app
    from irli.cli.app import COMMANDS

    for name in COMMANDS:
        args = app[name].assemble_argument_collection(parse_docstring=True)
        shown = [a for a in args if a.show]
        assert shown, name
        missing = [a.name for a in shown if not (a.parameter.help or "").strip()]
        assert not missing, f"irli {name}: no help for {missing}"


def test_every_config_field_is_an_option_with_its_own_help():
    import dataclasses

    from irli.cli.config_options import HELP, ConfigOptions
    from irli.config import IndexConfig, LabelConfig

    fields = {f.name for c in (IndexConfig, LabelConfig) for f in dataclasses.fields(c)} - {"metric"}
    assert set(ConfigOptions.__annotations__) == fields
    assert set(HELP) == fields


def test_build_and_info(built):
    p = irli_cmd("info", built)
    assert "ivf-ltr" in p.stdout and "2,000 x 8" in p.stdout and "buckets 16" in p.stdout
    assert "checksums verified" in p.stdout


def test_search_writes_npy(files, built):
    p = irli_cmd("search", built, files / "queries.fvecs", "-k", "5", "--probes", "16", "--out", files / "res")
    ids = np.load(f"{files / 'res'}.ids.npy")
    scores = np.load(f"{files / 'res'}.scores.npy")
    assert ids.shape == (50, 5) and scores.dtype == np.float32
    truth = np.fromfile(files / "truth.ivecs", dtype=np.int32).reshape(50, 11)[:, 1:]
    np.testing.assert_array_equal(ids, truth[:, :5])  # every bucket probed: exact
    assert "wrote" in p.stdout


def test_search_prints(files, built):
    p = irli_cmd("search", built, files / "queries.fvecs", "-k", "3")
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 50 and lines[0].startswith("0\t") and lines[0].count(":") == 3


def test_eval_table(files, built):
    p = irli_cmd("eval", built, files / "queries.fvecs", "--truth", files / "truth.ivecs", "--probes", "1,4,16")
    lines = p.stdout.strip().splitlines()
    assert lines[0].split() == ["probes", "recall@10", "candidates", "scanned", "QPS"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["1", "4", "16"]
    assert float(rows[-1][1]) == 1.0 and float(rows[0][1]) <= float(rows[1][1])


def test_eval_computes_truth_itself(files, built):
    p = irli_cmd("eval", built, files / "queries.fvecs", "--probes", "16", "-q")
    assert p.stdout.strip().splitlines()[2].split()[1] == "1.000"


def test_build_does_not_replace_an_index_unless_forced(files, tmp_path):
    out = tmp_path / "idx"
    irli_cmd("build", files / "items.npy", "-o", out, "--preset", "ivf", "--set", "n_buckets=8", "-q")
    p = irli_cmd("build", files / "items.npy", "-o", out, "--preset", "ivf", "-q", ok=False)
    assert p.returncode == 1 and f"{out} exists; pass --force to replace it" in p.stderr
    irli_cmd("build", files / "items.npy", "-o", out, "--preset", "ivf", "--set", "n_buckets=16", "-q", "--force")
    assert "buckets 16" in irli_cmd("info", out).stdout


def test_info_shows_what_applies(built, files, tmp_path):
    learned = irli_cmd("info", built).stdout  # ivf-ltr: a trained linear router, no codes
    assert "lr=" in learned and "pq_m" not in learned and "hidden" not in learned and "repartition_every" not in learned
    assert "max_load caps re-partitioning only, which is off" in learned
    irli_cmd("build", files / "items.npy", "-o", tmp_path / "f", "--set", "n_buckets=16", "-q")
    fast = irli_cmd("info", tmp_path / "f").stdout
    assert "pq_m=" in fast and "lr=" not in fast and "min_votes" not in fast


def test_add_remove_compact_and_filtered_search(files, tmp_path):
    out = tmp_path / "idx"
    x = np.load(files / "items.npy")
    irli_cmd("build", files / "items.npy", "-o", out, "--set", "n_buckets=16", "-q")
    np.save(tmp_path / "new.npy", x[:3] * 1.0)
    p = irli_cmd("add", out, tmp_path / "new.npy", "--ids", "9000,9001,9002")
    assert "added 3 items (ids 9000 .. 9002); 2,003" in p.stdout
    p = irli_cmd("add", out, tmp_path / "new.npy", "--ids", "9000,1,2", ok=False)
    assert p.returncode == 1 and "id 9000 is already in the index" in p.stderr
    assert "removed 2 items; 2,001" in irli_cmd("remove", out, "9000,5").stdout
    p = irli_cmd("search", out, tmp_path / "new.npy", "-k", "2", "--probes", "16", "--refine", "8",
                 "--allow", "9001,9002,1")
    rows = [[int(c.split(":")[0]) for c in line.split("\t")[1].split()] for line in p.stdout.strip().splitlines()]
    assert all(set(r) <= {9001, 9002, 1} for r in rows) and rows[1][0] in (1, 9001)
    assert "reclaimed 2 slots; 2,001 items" in irli_cmd("compact", out).stdout
    import irli

    index = irli.load(out)
    assert len(index) == 2001 and index.n_removed == 0 and 9000 not in index and 9002 in index


@pytest.mark.parametrize("preset", ["fast", "ivf-ltr"])
def test_eval_on_a_sharded_index(files, built, preset, tmp_path):
    """It crashed: eval passed threads, min_votes and top_c to
    ShardedIndex.search, and read vectors_ (a sharded index has none)."""
    src = built if preset == "ivf-ltr" else irli_cmd("build", files / "items.npy", "-o", tmp_path / "f",
                                                     "--set", "n_buckets=16", "-q") and tmp_path / "f"
    irli_cmd("shard", src, tmp_path / "s", "--shards", "2")
    for truth in ([], ["--truth", files / "truth.ivecs"]):  # the truth computed through the parts, or given
        p = irli_cmd("eval", tmp_path / "s", files / "queries.fvecs", "--probes", "2,16", "-q", *truth)
        rows = [line.split() for line in p.stdout.strip().splitlines()[2:]]
        assert [r[0] for r in rows] == ["2", "16"] and float(rows[-1][1]) >= 0.95, p.stdout
    p = irli_cmd("eval", tmp_path / "s", files / "queries.fvecs", "--min-votes", "2", ok=False)
    assert p.returncode == 1 and "min_votes is not available on a ShardedIndex" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["info", "/no/such/dir"], "no such index directory"),
    (["build", "/no/such.npy", "-o", "/tmp/x"], "no such file"),
    (["build", "{items}", "-o", "{tmp}/y", "--set", "n_buckets=0"], "n_buckets must be"),
    (["build", "{items}", "-o", "{tmp}/y", "--set", "bogus=1"], "unknown option 'bogus'"),
    (["build", "{items}", "-o", "{tmp}/y", "--set", "novalue"], "key=value"),
    (["build", "{items}", "-o", "{tmp}/y", "--n-buckets", "0"], "n_buckets must be"),
    (["build", "{items}", "-o", "{tmp}/y", "--n-buckets", "8", "--set", "n_buckets=8"], "n_buckets is given twice"),
    (["build", "{items}", "-o", "{tmp}/y", "--dropout", "0.5"], "unknown option 'dropout'"),
    (["search", "{idx}", "{items}", "--labels", "{items}"], "--labels does not apply to a vector index"),
    (["search", "{idx}", "{items}", "-k", "0"], "k must be a positive integer"),
    (["eval", "{idx}", "{queries}", "--probes", "a,b"], "--probes expects integers"),
])
def test_errors_are_one_line(files, built, args, needle):
    args = [a.format(items=files / "items.npy", tmp=files, idx=built, queries=files / "queries.fvecs")
            for a in args]
    p = irli_cmd(*args, ok=False)
    assert p.returncode == 1
    err = p.stderr.strip()
    assert err.startswith("irli: error:") and needle in err and "\n" not in err, err
    assert "Traceback" not in p.stderr


def test_wrong_dimension_queries(files, built):
    np.save(files / "q3.npy", np.ones((4, 3), np.float32))
    p = irli_cmd("search", built, files / "q3.npy", ok=False)
    assert p.returncode == 1 and "dimension 3" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["build", "{items}", "-o", "{tmp}/y", "--bogus", "1"], "Unknown option: --bogus"),
    (["build", "{items}", "-o", "{tmp}/y", "--threads", "0"], "--threads: must be a positive integer"),
    (["build", "{items}", "-o", "{tmp}/y", "--loss", "cubic"], "--loss"),
    (["build", "{items}"], "--output requires an argument"),
    (["biuld", "{items}"], 'Unknown command "biuld"'),
    ([], "Usage: irli"),
])
def test_bad_command_lines_exit_2_with_one_line(files, args, needle):
    p = irli_cmd(*[a.format(items=files / "items.npy", tmp=files) for a in args], ok=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    if args:
        err = p.stderr.strip()
        assert err.startswith("irli: error:") and needle in err and "\n" not in err, err
    else:  # no command: the overview
        assert needle in p.stdout


def test_config_fields_are_options(files, tmp_path):
    irli_cmd("build", files / "items.npy", "-o", tmp_path / "a", "--preset", "ivf", "--n-buckets", "8",
             "--kmeans-iters", "5", "--no-repartition", "-q")
    info = irli_cmd("info", tmp_path / "a").stdout
    assert "buckets 8" in info and "kmeans_iters=5" in info
    irli_cmd("build", files / "items.npy", "-o", tmp_path / "b", "--preset", "ivf", "--n-buckets", "none", "-q")
    assert "n_buckets=None" in irli_cmd("info", tmp_path / "b").stdout  # chosen from the collection


def test_eval_truth_leaves_out_removed_items(files, tmp_path):
    """The exact truth is over the items the index holds: removed ones keep
    their slots (and vectors) until compact, and used to count as misses."""
    out = tmp_path / "idx"
    irli_cmd("build", files / "items.npy", "-o", out, "--preset", "ivf", "--n-buckets", "16", "-q")
    top1 = np.unique(np.fromfile(files / "truth.ivecs", dtype=np.int32).reshape(50, 11)[:, 1])
    np.save(tmp_path / "top1.npy", top1.astype(np.int64))
    irli_cmd("remove", out, tmp_path / "top1.npy")
    p = irli_cmd("eval", out, files / "queries.fvecs", "--probes", "16", "-q")
    assert p.stdout.strip().splitlines()[2].split()[1] == "1.000"


def test_eval_on_an_empty_index_says_so(files, tmp_path):
    import irli

    irli_cmd("build", files / "items.npy", "-o", tmp_path / "idx", "--preset", "ivf", "--n-buckets", "8", "-q")
    index = irli.load(tmp_path / "idx", mmap=False)
    index.remove(index.ids)
    index.save(tmp_path / "empty")
    p = irli_cmd("eval", tmp_path / "empty", files / "queries.fvecs", "-q", ok=False)
    assert p.returncode == 1 and "holds no items" in p.stderr


def test_config_options_with_pydantic_loaded(files, tmp_path):
    """cyclopts checks defaults with pydantic once something (Ray) has
    imported it: the configuration options have none to check."""
    pytest.importorskip("pydantic")
    code = ("import sys, pydantic; from irli.cli import main; "
            f"sys.exit(main(['build', {str(files / 'items.npy')!r}, '-o', {str(tmp_path / 'i')!r}, '--preset', "
            "'ivf', '--n-buckets', '8', '--set', 'kmeans_iters=4', '-q']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "buckets 8" in irli_cmd("info", tmp_path / "i").stdout


def test_piped_build_writes_stage_lines_and_learns_from_a_log_with_its_own_targets(files, tmp_path):
    from irli.io.datasets import read_vectors

    q = read_vectors(files / "queries.fvecs")
    x = np.load(files / "items.npy")
    np.save(tmp_path / "clicks.npy", exact_knn(x, q, 2, "cosine")[0])  # ids = row numbers here
    p = irli_cmd("build", files / "items.npy", "-o", tmp_path / "idx", "--preset", "ivf-ltr", "--set", "n_buckets=16",
                 "--set", "epochs=2", "--train-queries", files / "queries.fvecs", "--train-targets",
                 tmp_path / "clicks.npy")
    # stderr is a pipe here: a line per stage, not tqdm bars
    assert "] k-means: started" in p.stderr and "] k-means: done" in p.stderr, p.stderr
    assert "] training: done" in p.stderr and "\r" not in p.stderr
    np.save(tmp_path / "bad.npy", np.full((len(q), 1), 10**6))
    bad = irli_cmd("build", files / "items.npy", "-o", tmp_path / "idx2", "--preset", "ivf-ltr", "--set",
                   "n_buckets=16", "--train-queries", files / "queries.fvecs", "--train-targets", tmp_path / "bad.npy",
                   ok=False)
    assert bad.returncode == 1 and "not among the items' ids" in bad.stderr


def test_demo_preset_specs_carry_overrides():
    from irli.cli.demo import parse_spec
    from irli.errors import ConfigError

    assert parse_spec("fast") == ("fast", {})
    assert parse_spec("fast:learned_probes=true+refine=2") == ("fast", {"learned_probes": True, "refine": 2})
    with pytest.raises(ConfigError):
        parse_spec("fast:no_such_knob=1")
    with pytest.raises(ConfigError):
        parse_spec("fastest")


def test_heartbeat_speaks_while_a_silent_step_runs_and_stops_after(capsys):
    import time

    from irli.cli.bars import Heartbeat

    with Heartbeat("compiling", every=0.05):
        time.sleep(0.3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and all(line.startswith("  ... compiling (") for line in lines)
    time.sleep(0.15)
    assert capsys.readouterr().out == ""  # the thread ended with the step
