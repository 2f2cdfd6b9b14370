"""The architecture, checked: the import contracts in .importlinter (the core knows no job
kind, job kinds do not import one another, the continual kind is layered, the shared
libraries know no kind), no import cycle between hpccl's modules nor between its top-level
packages, and a job file loads without torch."""

import glob
import os
import subprocess
import sys

from helpers import ROOT


def test_import_contracts_hold():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    r = subprocess.run([lint, "--config", os.path.join(ROOT, ".importlinter")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, on, stack, cycles, counter = {}, {}, set(), [], [], [0]
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(adj[w])))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        cycles.append(sorted(comp))
    return cycles


class _Graph:
    def __init__(self, edges):
        self.edges = edges
        self.modules = set(edges) | {b for v in edges.values() for b in v}

    def find_modules_directly_imported_by(self, m):
        return self.edges.get(m, set())


def test_the_cycle_finder_finds_cycles():
    g = _Graph({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}})
    assert sorted(import_cycles(g)) == [["a", "b", "c"], ["e", "e2"]]
    assert import_cycles(_Graph({"a": {"b"}, "b": {"c"}})) == []


def test_no_import_cycles_between_modules():
    import grimp
    graph = grimp.build_graph("hpccl")
    assert import_cycles(graph) == []


def test_every_registered_kind_names_functions_that_exist():
    from hpccl.core import kinds
    assert set(kinds.KINDS) == {"continual", "megabatch", "erm", "online_rnn"}
    for kind in kinds.KINDS.values():
        for ref in (kind.runner, kind.summarize, kind.format, kind.plots, kind.inputs):
            assert ref is None and kind is kinds.KINDS["online_rnn"] or callable(kinds._load(ref)), (kind.name, ref)
        assert kind.resumable or "resume" in kind.no_resume
        assert all(name.endswith(".png") for name in kind.figure_names()), kind.name


def test_no_import_cycles_between_top_level_packages():
    """hpccl.core, hpccl.continual, hpccl.alma, ..., hpccl.cli: each package a node."""
    import grimp
    graph = grimp.build_graph("hpccl")
    top = lambda m: ".".join(m.split(".")[:2])      # noqa: E731
    edges = {}
    for m in graph.modules:
        for d in graph.find_modules_directly_imported_by(m):
            if top(m) != top(d) and "hpccl" not in (top(m), top(d)):   # the root: its version
                edges.setdefault(top(m), set()).add(top(d))
    assert "hpccl.core" in edges["hpccl.continual"] and import_cycles(_Graph(edges)) == []


def test_loading_a_job_file_does_not_import_torch_or_mpi():
    """``hpccl validate`` and ``hpccl submit`` run on login nodes: reading the schema of every
    kind must stay light (the kinds' packages re-export lazily)."""
    code = ("import sys; from hpccl.config import load_job; "
            f"[load_job(p) for p in {sorted(glob.glob(os.path.join(ROOT, 'jobs', '*.yaml')))!r}]; "
            "print(sorted(m for m in ('torch', 'mpi4py', 'h5py', 'horovod') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"

