"""Bad input to the executors (issue 23): a missing optional install, an unreachable Ray cluster and a machine
without Slurm are each one line naming the fix, before any step runs; the job graph itself (planned without
running anything) orders a group after its members and cuts chains at the GPU steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from charframe.cli import main
from charframe.errors import CharframeError
from charframe.pipeline.executors import execute
from charframe.pipeline.graph import gpu_steps, plan_graph
from charframe.pipeline.runner import Options, all_targets

sys.path.insert(0, str(Path(__file__).parent))

from cluster_project import make_cluster_project  # noqa: E402


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_cluster_project(tmp_path / "proj")


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("executor, extra, module", [("ray", "ray", "ray"), ("slurm", "slurm", "submitit")])
def test_a_missing_extra_is_one_line_naming_it(project: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture, executor: str, extra: str,
                                               module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # not installed
    code = main(["rerun", "--all", "--project", str(project), "--executor", executor])
    assert code == 2
    assert _one_line(capsys) == (f"error: the {executor} executor needs {module}, which is not installed: "
                                 f"pip install 'charframe[{extra}]'")
    assert not (project / "LoRAWork").exists()  # nothing ran


def test_an_unreachable_ray_cluster_is_one_line(project: Path, capsys: pytest.CaptureFixture) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'charframe[ray]'")
    assert not ray.is_initialized()
    code = main(["rerun", "--all", "--project", str(project), "--executor", "ray", "--address", "127.0.0.1:1"])
    assert code == 2
    line = _one_line(capsys)
    assert line.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1: ") and "--address" in line
    assert "ray start --head" in line and not ray.is_initialized()


def test_slurm_without_sbatch_is_one_line(project: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit", reason="submitit is not installed: pip install 'charframe[slurm]'")
    monkeypatch.setenv("PATH", str(project))  # no sbatch on it
    assert main(["rerun", "--all", "--project", str(project), "--executor", "slurm"]) == 2
    assert _one_line(capsys) == ("error: the slurm executor needs Slurm's sbatch, which is not on this machine's "
                                 "PATH; run on a login node of the cluster")


def test_an_unknown_executor_in_the_project_file_is_refused(project: Path) -> None:
    with pytest.raises(CharframeError, match="unknown executor 'k8s'"):
        execute(all_targets(project), executor="k8s")


def test_the_graph_orders_groups_after_members_and_cuts_at_gpu_steps(project: Path) -> None:
    graph = plan_graph(all_targets(project), Options(progress=False))
    assert [(n.key, n.deps, n.carries) for n in graph.nodes] == [
        ("aa.toml:aa", (), ()), ("bb.toml:bb", (), ()), ("cc.toml:cc", (), ()),
        ("duo.group.toml:duo", ("aa.toml:aa", "bb.toml:bb"), ())]  # another target: its failures are not carried
    gpu = gpu_steps()
    assert gpu == {"generate", "pick", "train", "score", "preview"}  # pick: its retries generate; score renders
    cc = graph.node("cc.toml:cc")
    assert [([cc.planned[i].step.name for i in p.positions], p.gpu) for p in cc.parts] == [
        (["generate"], True), (["clean"], False), (["pick"], True), (["export", "prepare"], False),
        (["train", "score"], True), (["merge", "compress"], False), (["preview"], True)]
    aa = graph.node("aa.toml:aa")
    assert [p.label for p in aa.parts][6:9] == ["aa.toml:aa face preview … body-x generate", "aa.toml:aa body-x clean",
                                                "aa.toml:aa body-x pick"]
    # `run` of the group file: the members' chains and the group, whose steps their failures block
    whole = plan_graph([project / "Characters" / "duo.group.toml"], Options(progress=False), per_target_stage=False)
    assert [(n.key, n.deps, n.carries) for n in whole.nodes] == [
        ("duo.group.toml:aa", (), ()), ("duo.group.toml:bb", (), ()),
        ("duo.group.toml:duo", ("duo.group.toml:aa", "duo.group.toml:bb"),
         ("duo.group.toml:aa", "duo.group.toml:bb"))]


def test_an_up_to_date_node_sends_nothing(project: Path) -> None:
    graph = plan_graph(all_targets(project), Options(progress=False, until_step="generate", stage="face"))
    assert all(len(n.parts) == 1 for n in graph.nodes if n.key != "duo.group.toml:duo")
    # a group file under rerun --stage face runs its members' face stages: nothing of its own, after aa and bb
    assert [n.key for n in graph.nodes] == ["aa.toml:aa", "bb.toml:bb", "cc.toml:cc", "duo.group.toml:aa",
                                            "duo.group.toml:bb"]
    assert graph.node("duo.group.toml:aa").deps == ("aa.toml:aa",)
