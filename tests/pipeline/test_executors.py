"""The executors of `run`/`rerun` (issue 23): Ray and submitit run the same job graph as the local run, with the
same files and the same summary table; a killed worker fails its chain only; a worker that does not see the
project fails that job with the path; missing extras and unreachable clusters are one line.

Three tiny characters and a group (cluster_project.py) run for real: once locally (the reference), once on a
local Ray instance (2 CPUs), once through submitit's local executor. Ray and submitit are optional installs:
without them their tests are skipped, saying which extra to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from charframe.errors import CharframeError
from charframe.pipeline import executor_slurm
from charframe.pipeline.executor_ray import run_ray
from charframe.pipeline.executors import execute
from charframe.pipeline.graph import assemble, plan_graph
from charframe.pipeline.runner import Options, RunReport, all_targets, summary_table
from charframe.pipeline.steps import STEPS, with_calls
from charframe.project import load_project

sys.path.insert(0, str(Path(__file__).parent))

from cluster_project import make_cluster_project, output_hashes  # noqa: E402
from dying_steps import MARKER  # noqa: E402

try:
    import ray
except ImportError:  # pragma: no cover - depends on the install
    ray = None
try:
    import submitit
except ImportError:  # pragma: no cover
    submitit = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed: pip install 'charframe[ray]'")
needs_submitit = pytest.mark.skipif(submitit is None, reason="submitit is not installed: pip install 'charframe[slurm]'")
HERE = Path(__file__).parent
QUIET = Options(progress=False)
#: only the compression, forced: a cheap rerun of every stage that still runs the whole graph
COMPRESS = Options(from_step="compress", until_step="compress", progress=False)
DYING = with_calls(STEPS, {"compress": "dying_steps:compress_or_die"})


def rows(report: RunReport) -> list[tuple[str, str, str, str]]:
    """The summary table without its times."""
    return [(r.target, r.stage, r.step, r.status) for r in report.results]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Every executor computes with one CPU thread ([cluster] cpus = 1 in the project), the local run too."""
    import torch

    from charframe.cleaning.rembg_method import model_available

    model_available(None)  # the import that used to change the thread count, done once before the count is set
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cluster_project(tmp_path_factory.mktemp("pristine") / "proj")


def fresh(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "proj", symlinks=True))


@pytest.fixture(scope="module")
def local_run(pristine: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread):
    """The reference: the local executor, then the project's output files by content."""
    root = fresh(pristine, tmp_path_factory.mktemp("local"))
    report = execute(all_targets(root), QUIET, executor="local")
    assert not report.failed, summary_table(report)
    return root, report, output_hashes(root)


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray instance with 2 CPUs for the module; shut down (no raylet left behind) whatever happens.
    Its workers inherit this environment: the test helpers importable, the private cache, no model hub."""
    if ray is None:
        pytest.skip("Ray is not installed: pip install 'charframe[ray]'")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "CHARFRAME_CACHE_DIR", "RAY_AUTH_MODE")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path[1:], os.environ.get("PYTHONPATH", "")])
    os.environ["CHARFRAME_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "charframe-cache")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written to ~/.ray
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for sig, handler in handlers.items():  # ray.init's SIGTERM handler would outlive it (later tests check ours)
            signal.signal(sig, handler)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@needs_ray
def test_ray_gives_the_local_files_and_table(pristine, local_run, ray_instance, tmp_path, one_torch_thread) -> None:
    _, local, hashes = local_run
    root = fresh(pristine, tmp_path)
    report = execute(all_targets(root), QUIET, executor="ray")
    assert rows(report) == rows(local)
    assert all(r.status == "ran" for r in report.results) and len(report.results) == 57  # 51 steps + a score step per stage
    got = output_hashes(root)
    assert len(got) == len(hashes) > 250
    assert {k: v for k, v in got.items() if hashes.get(k) != v} == {}
    again = execute(all_targets(root), QUIET, executor="ray")
    assert summary_table(again).startswith("nothing to do: 4 target(s) up to date (")


@needs_ray
def test_a_killed_worker_fails_its_chain_only_and_a_rerun_finishes_it(local_run, ray_instance, tmp_path,
                                                                      one_torch_thread) -> None:
    """(The copied project's `prepare` steps run too: the dataset TOMLs hold the project's location.)"""
    root = Path(shutil.copytree(local_run[0], tmp_path / "proj", symlinks=True))
    (root / "LoRAOutput" / "cc" / MARKER).write_text("")
    report = execute(all_targets(root), COMPRESS, DYING, executor="ray")
    status = {(r.target, r.stage, r.step): (r.status, r.message) for r in report.results if r.step == "compress"}
    failed, why = status.pop(("cc.toml", "face", "compress"))
    assert failed == "failed" and "the worker running it died" in why and "rerun" in why
    assert set(status) == {(t, s, "compress") for t, s in (("aa.toml", "face"), ("aa.toml", "body-x"),
                           ("bb.toml", "face"), ("bb.toml", "body-x"), ("duo.group.toml", "group"))}
    assert {v[0] for v in status.values()} == {"ran"}
    again = execute(all_targets(root), Options(until_step="compress", progress=False), DYING, executor="ray")
    assert not again.failed
    assert [(r.target, r.stage, r.step) for r in again.results if r.status == "ran"] == [("cc.toml", "face", "compress")]


@needs_ray
def test_a_dead_member_blocks_its_group_and_nothing_else(local_run, ray_instance, tmp_path, one_torch_thread) -> None:
    root = Path(shutil.copytree(local_run[0], tmp_path / "proj", symlinks=True))
    (root / "LoRAOutput" / "aa" / MARKER).write_text("")
    report = execute(all_targets(root), COMPRESS, DYING, executor="ray")
    status = {(r.target, r.stage): r.status for r in report.results if r.step == "compress"}
    assert status == {("aa.toml", "face"): "failed", ("aa.toml", "body-x"): "blocked", ("bb.toml", "face"): "ran",
                      ("bb.toml", "body-x"): "ran", ("cc.toml", "face"): "ran", ("duo.group.toml", "group"): "blocked"}
    blocked = next(r for r in report.results if r.target == "duo.group.toml" and r.step == "compress")
    assert blocked.message == "needs aa, whose worker died"


@needs_ray
def test_a_worker_that_cannot_see_the_project_fails_that_job_with_the_path(local_run, ray_instance, tmp_path) -> None:
    root = Path(shutil.copytree(local_run[0], tmp_path / "proj", symlinks=True))
    graph = plan_graph(all_targets(root), COMPRESS)
    hidden = root / "Characters" / "cc.toml"
    hidden.rename(tmp_path / "elsewhere.toml")  # planned here, gone where the job runs
    report = assemble(graph, run_ray(graph, load_project(root).cluster))
    load = [r for r in report.results if r.target == "cc.toml"]
    assert [(r.stage, r.step, r.status) for r in load] == [("-", "load", "failed")]
    assert load[0].message.startswith(f"{hidden}: not found on ") and "at the same path" in load[0].message
    assert sorted((r.target, r.stage) for r in report.results if r.step == "compress" and r.status == "ran") == [
        ("aa.toml", "body-x"), ("aa.toml", "face"), ("bb.toml", "body-x"), ("bb.toml", "face"),
        ("duo.group.toml", "group")]


@needs_submitit
def test_submitit_gives_the_local_files_and_table(pristine, local_run, tmp_path, one_torch_thread) -> None:
    _, local, hashes = local_run
    root = fresh(pristine, tmp_path)
    targets = all_targets(root)
    graph = plan_graph(targets, Options(progress=False))
    report = assemble(graph, executor_slurm.run_slurm(graph, load_project(root).cluster, local=True))
    assert rows(report) == rows(local)
    got = output_hashes(root)
    assert {k: v for k, v in got.items() if hashes.get(k) != v} == {} and len(got) == len(hashes)
    runs = list((root / "LoRAWork" / "cluster").iterdir())
    assert len(runs) == 1 and sorted(p.name for p in (runs[0] / "results").iterdir()) == [
        "aa.toml_aa.json", "bb.toml_bb.json", "cc.toml_cc.json", "duo.group.toml_duo.json"]


def test_the_sbatch_lines_follow_the_cluster_table(tmp_path: Path) -> None:
    """What Slurm receives: submitit's sbatch text for the parameters `slurm_parameters` makes from [cluster]."""
    (tmp_path / "charframe.toml").write_text(
        '[cluster]\nexecutor = "slurm"\npartition = "gpu-a100"\ngpus = 2\ncpus = 8\ntime = "1-02:30:00"\n'
        'mem_gb = 48\naccount = "anime"\nsetup = ["module load cuda/12.4", "source /shared/venv/bin/activate"]\n')
    cluster = load_project(tmp_path).cluster
    assert cluster.minutes == 1590
    params = executor_slurm.slurm_parameters(cluster, "charframe-duo", gpu=True, after=["101", "102"])
    assert params == {"job_name": "charframe-duo", "time": 1590, "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 8,
                      "gpus_per_node": 2, "partition": "gpu-a100", "account": "anime", "mem": "48GB",
                      "setup": ["module load cuda/12.4", "source /shared/venv/bin/activate"],
                      "dependency": "afterok:101:102", "additional_parameters": {"kill-on-invalid-dep": "yes"}}
    cpu_only = executor_slurm.slurm_parameters(cluster, "charframe-cc", gpu=False)
    assert "gpus_per_node" not in cpu_only and "dependency" not in cpu_only
    if submitit is None:
        return
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="python -m x", folder=tmp_path / "logs", **params)
    lines = {ln for ln in text.splitlines() if ln.startswith("#SBATCH")}
    assert {"#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=2", "#SBATCH --time=1590",
            "#SBATCH --cpus-per-task=8", "#SBATCH --mem=48GB", "#SBATCH --account=anime",
            "#SBATCH --dependency=afterok:101:102", "#SBATCH --kill-on-invalid-dep=yes",
            "#SBATCH --job-name=charframe-duo"} <= lines
    assert "module load cuda/12.4\nsource /shared/venv/bin/activate" in text


@pytest.mark.parametrize("bad, message", [
    ('[cluster]\ntime = "soon"\n', "cluster.time: 'soon' is not a time limit"),
    ("[cluster]\ntime = 0\n", "cluster.time: 0 is not a time limit"),
    ('[cluster]\nexecutor = "k8s"\n', "cluster.executor: expected one of 'local', 'ray', 'slurm'"),
    ('[cluster]\ngpus = -1\n', "cluster.gpus"),
    ('[cluster]\nlogs = "../elsewhere"\n', "cluster.logs: '../elsewhere' climbs out"),
    ('[cluster]\npartitoin = "gpu"\n', "partitoin"),
])
def test_a_bad_cluster_table_is_one_line_naming_the_key(tmp_path: Path, bad: str, message: str) -> None:
    (tmp_path / "charframe.toml").write_text(bad)
    with pytest.raises(CharframeError) as e:
        load_project(tmp_path)
    assert message in str(e.value) and str(tmp_path / "charframe.toml") in str(e.value) and "\n" not in str(e.value)
