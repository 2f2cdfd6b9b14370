"""Site files: shipped sites, validation errors, user overrides, layout and queue choice."""

import pytest

from hpccl.cli import main
from hpccl.core.errors import ConfigError
from hpccl.sched.sites import (available_sites, load_site, parse_time_limit, parse_walltime,
                               plan_layout, select_queue)

SHIPPED = ("local", "perlmutter", "polaris", "slurm-local", "thetagpu")


def write(path, text):
    path.write_text(text)
    return str(path)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# --- shipped sites -------------------------------------------------------------------------------------

def test_every_shipped_site_loads_with_its_documented_conventions():
    assert set(SHIPPED) <= set(available_sites())
    sites = {name: load_site(name) for name in SHIPPED}
    assert sites["local"].scheduler == "none" and sites["local"].launcher == "{local_mpirun}"
    assert sites["slurm-local"].scheduler == "slurm"
    pol = sites["polaris"]
    assert (pol.scheduler, pol.gpus_per_node) == ("pbs", 4)
    assert pol.pbs.select == "{nodes}:system=polaris" and pol.pbs.place == "scatter"
    assert pol.filesystems == ["home", "eagle"]
    assert pol.launcher.startswith("mpiexec -n {ranks} --ppn {ranks_per_node} --depth=")
    assert "--cpu-bind depth" in pol.launcher and pol.gpu_affinity.mode == "wrapper"
    assert {"debug", "debug-scaling", "prod"} <= set(pol.queue_names())
    theta = sites["thetagpu"]
    assert (theta.scheduler, theta.gpus_per_node) == ("pbs", 8)
    assert theta.launcher.startswith('mpirun -hostfile "$PBS_NODEFILE"')
    pm = sites["perlmutter"]
    assert (pm.scheduler, pm.gpus_per_node, pm.slurm.constraint) == ("slurm", 4, "gpu")
    assert pm.launcher.startswith("srun ") and "--gpus-per-task=1" in pm.launcher
    assert pm.slurm.queue_option == "qos" and pm.gpu_affinity.mode == "launcher"


def test_sites_command_lists_and_shows(capsys):
    assert main(["sites"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"\n{name} " in out or out.startswith(f"{name} ") or f"\n{name}  " in out
    assert "site files are read from" in out and "HPCCL_SITE_DIR" in out
    assert main(["sites", "polaris"]) == 0
    out = capsys.readouterr().out
    assert "# site 'polaris' from:" in out and "site_configs/polaris.yaml" in out
    assert "debug-scaling" in out and "routed to small" in out and "slurm:" not in out


# --- validation errors -------------------------------------------------------------------------------------

GOOD = """\
scheduler: slurm
gpus_per_node: 4
cores_per_node: 32
launcher: "srun -n {ranks}"
queues:
  - {name: batch, max_nodes: 8, max_walltime: "12:00:00"}
"""


@pytest.mark.parametrize("change, expect", [
    ("acount: m1", ["unknown key 'acount'", "Did you mean 'account'?"]),
    ("scheduler: lsf", ["key 'scheduler'", "one of 'slurm', 'pbs', 'none'", "'lsf'"]),
    ("gpus_per_node: four", ["key 'gpus_per_node'", "expected an integer", "'four'"]),
    ('launcher: "srun -n {rank}"', ["key 'launcher'", "unknown placeholder {rank}",
                                    "Did you mean 'ranks'?"]),
    ("queues: [{name: q, max_nodes: 2, max_walltime: '2h'}]",
     ["key 'queues[0].max_walltime'", "HH:MM:SS", "'2h'"]),
    ("queues: []", ["key 'queues'", "needs at least one queue"]),
    ("slurm: {gpu_request: all}", ["key 'slurm.gpu_request'", "'gpus-per-node'", "'all'"]),
    ("default_walltime: '00:00:00'", ["key 'default_walltime'", "a time limit above zero", "'00:00:00'"]),
])
def test_site_errors_name_the_file_key_expected_and_found(isolated_sites, change, expect):
    key = change.split(":")[0]
    text = "\n".join(ln for ln in GOOD.splitlines() if not ln.startswith(key + ":")
                     and not (key == "queues" and ln.startswith("  - "))) + "\n" + change + "\n"
    path = write(isolated_sites / "mysite.yaml", text)
    msg = error_of(load_site, "mysite")
    assert path in msg
    for part in expect:
        assert part in msg, msg


def test_bad_yaml_and_unknown_site(isolated_sites):
    write(isolated_sites / "broken.yaml", "scheduler: [slurm\n")
    assert "not valid YAML" in error_of(load_site, "broken")
    msg = error_of(load_site, "polars")
    assert "unknown site 'polars'" in msg and "Did you mean 'polaris'?" in msg and "hpccl sites" in msg


def test_cli_prints_site_errors_as_one_paragraph(isolated_sites, capsys):
    write(isolated_sites / "mysite.yaml", GOOD + "acount: m1\n")
    assert main(["sites", "mysite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpccl: error: ") and "Traceback" not in err and "acount" in err


# --- overrides ---------------------------------------------------------------------------------------------

def test_user_file_is_merged_over_the_shipped_one(isolated_sites):
    override = write(isolated_sites / "polaris.yaml", "account: MyProject\npbs: {requeue: qrerun}\n")
    site = load_site("polaris")
    assert site.account == "MyProject" and site.pbs.requeue == "qrerun"
    assert site.pbs.select == "{nodes}:system=polaris"          # the rest is the shipped file's
    assert site.sources[-1] == override and site.sources[0].endswith("site_configs/polaris.yaml")


def test_xdg_config_dir_then_hpccl_site_dir_take_precedence(isolated_sites, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg-config" / "hpccl" / "sites"
    xdg.mkdir(parents=True)
    write(xdg / "perlmutter.yaml", "account: from_xdg\ndefault_walltime: '00:20:00'\n")
    write(isolated_sites / "perlmutter.yaml", "account: from_site_dir\n")
    site = load_site("perlmutter")
    assert site.account == "from_site_dir" and site.default_walltime == "00:20:00"
    assert len(site.sources) == 3


def test_an_override_with_a_mistake_names_the_override_file(isolated_sites):
    path = write(isolated_sites / "polaris.yaml", "queues: [{name: debug, max_nodes: 0, max_walltime: '01:00:00'}]\n")
    msg = error_of(load_site, "polaris")
    assert msg.startswith(path) and "merged over" in msg and "queues[0].max_nodes" in msg


def test_a_new_site_can_extend_a_shipped_one_and_sites_load_from_a_path(isolated_sites, tmp_path):
    write(isolated_sites / "mini-polaris.yaml", "extends: polaris\ngpus_per_node: 2\naccount: X\n")
    site = load_site("mini-polaris")
    assert site.name == "mini-polaris" and site.gpus_per_node == 2 and site.scheduler == "pbs"
    assert site.launcher == load_site("polaris").launcher
    path = write(tmp_path / "elsewhere.yaml", GOOD)
    assert load_site(path).name == "elsewhere"
    write(isolated_sites / "loop-a.yaml", "extends: loop-b\n")
    write(isolated_sites / "loop-b.yaml", "extends: loop-a\n")
    assert "goes round in a circle" in error_of(load_site, "loop-a")


# --- layout and queues -------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus, nodes, per_node", [(1, 1, 1), (2, 1, 2), (4, 1, 4), (6, 2, 3),
                                                   (8, 2, 4), (128, 32, 4)])
def test_layout_uses_the_fewest_nodes_with_equal_ranks_per_node(gpus, nodes, per_node):
    lay = plan_layout(load_site("polaris"), gpus)
    assert (lay.nodes, lay.ranks_per_node) == (nodes, per_node)


def test_layout_refuses_uneven_splits_with_a_suggestion():
    msg = error_of(plan_layout, load_site("polaris"), 7)
    assert "4 GPUs per node" in msg and "HINT: use 4 or 8 GPUs" in msg


@pytest.mark.parametrize("nodes, walltime, queue", [
    (1, "00:30:00", "debug"), (2, "01:00:00", "debug"), (4, "00:30:00", "debug-scaling"),
    (16, "02:00:00", "prod"), (50, "06:00:00", "prod"), (200, "20:00:00", "prod")])
def test_first_queue_that_admits_the_job_is_chosen(nodes, walltime, queue):
    q = select_queue(load_site("polaris"), nodes, parse_walltime(walltime))
    assert q.name == queue


def test_no_queue_admits_refuses_with_every_limit_hit():
    msg = error_of(select_queue, load_site("polaris"), 4, parse_walltime("02:00:00"))
    assert "no queue admits a job of 4 node(s) for 02:00:00" in msg and "nothing was submitted" in msg
    assert "debug (1-2 nodes, 00:05:00-01:00:00): 4 node(s) above its maximum 2" in msg
    assert "walltime 02:00:00 above its maximum 01:00:00" in msg
    assert "4 node(s) below its minimum 10" in msg and "preemptable" in msg
    msg = error_of(select_queue, load_site("polaris"), 30, parse_walltime("08:00:00"))
    assert "routed to medium): walltime 08:00:00 above its maximum 06:00:00" in msg


def test_named_queues_and_per_user_limits():
    pol = load_site("polaris")
    assert select_queue(pol, 4, parse_walltime("48:00:00"), "preemptable").name == "preemptable"
    msg = error_of(select_queue, pol, 1, 600, "debugg")
    assert "no such queue" in msg and "Did you mean 'debug'?" in msg
    assert select_queue(pol, 1, 600, "debug").name == "debug"
    # debug-scaling admits one queued job per user: a second 4-node point finds no queue
    assert select_queue(pol, 4, 600, taken={}).name == "debug-scaling"
    msg = error_of(select_queue, pol, 4, 600, None, {"debug-scaling": 1})
    assert "1 queued job(s) per user, already used by this sweep" in msg


def test_sites_without_queues_check_max_nodes():
    local = load_site("local")
    assert select_queue(local, 1, 60) is None
    assert "at most 1 (max_nodes)" in error_of(select_queue, local, 2, 60)
    assert "has no queues" in error_of(select_queue, local, 1, 60, "debug")


@pytest.mark.parametrize("text", ["00:00:00", "0:00:00", "000:00:00"])
def test_a_zero_time_limit_is_refused(text):
    """Slurm reads --time=00:00:00 as no limit: a job's limit must be above zero."""
    msg = error_of(parse_time_limit, text, "--walltime")
    assert msg.startswith("--walltime: expected a time limit above zero") and repr(text) in msg
    assert "HH:MM:SS" in error_of(parse_time_limit, "-01:00:00", "--walltime")
    assert parse_time_limit("00:00:01", "--walltime") == 1
    assert parse_walltime(text) == 0              # still fine for a queue's min_walltime


@pytest.mark.parametrize("text", ["1:00", "01:60:00", "one hour", "", "-1:00:00"])
def test_walltime_format_errors(text):
    assert "HH:MM:SS" in error_of(parse_walltime, text, "--walltime")
    assert parse_walltime("48:00:00") == 48 * 3600


def test_exponent_floats_are_numbers_in_site_files(isolated_sites):
    write(isolated_sites / "polaris.yaml", "network: {inter_node_bandwidth_gbs: 2.5e1}\n")
    assert load_site("polaris").network.inter_node_bandwidth_gbs == 25.0
