import json

import pytest

from helpers import hpccl_cmd, run_cmd


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["info"], ["analyze"], ["data"],
                                     ["data", "convert"], ["data", "convert", "digits"]])
def test_every_command_explains_itself_with_an_example(command):
    r = run_cmd(hpccl_cmd(*command, "--help"))
    assert r.returncode == 0
    assert "example" in r.stdout.lower()


def test_info_reports_the_stack():
    r = run_cmd(hpccl_cmd("info", "--json"))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["mpi_vendor"] == "Open MPI" and info["mpi_thread_level"] == "multiple"
    assert info["horovod"] == "0.28.1" and info["horovod_mpi_built"] and info["horovod_gloo_built"]
    assert info["torch"].startswith("2.") and "h5py" in info and "mpi4py" in info


def test_analyze_refuses_a_directory_that_is_not_a_run(tmp_path):
    r = run_cmd(hpccl_cmd("analyze", str(tmp_path)))
    assert r.returncode == 2
    assert "not an hpccl run directory" in r.stderr and str(tmp_path) in r.stderr


def test_analyze_refuses_a_log_of_another_schema_version(tmp_path):
    from hpccl.core.logs import H5Log
    log = H5Log(str(tmp_path / "log.h5"), "run")
    log.attrs["schema_version"] = 99
    log.flush()
    r = run_cmd(hpccl_cmd("analyze", str(tmp_path)))
    assert r.returncode == 2 and "schema version 99" in r.stderr


def test_run_refuses_np_mismatch_inside_a_launch(tmp_path):
    from helpers import write_job
    job = write_job(tmp_path / "job.yaml")
    r = run_cmd(hpccl_cmd("run", job, "-n", "4"), env={"OMPI_COMM_WORLD_SIZE": "2"})
    assert r.returncode == 2 and "inside an MPI launch of 2 ranks" in r.stderr
