"""Sites as data: one YAML file per machine, validated on load, plus the limits logic.

Where site files come from (later ones win, see :func:`site_dirs`):

1. ``site_configs/`` in the hpccl checkout (the shipped sites),
2. ``$XDG_CONFIG_HOME/hpccl/sites/`` (default ``~/.config/hpccl/sites/``),
3. every directory in ``$HPCCL_SITE_DIR`` (``:``-separated).

A file whose name matches an earlier one is an *override*: its mappings are merged key by key
over the earlier file (lists and plain values are replaced), so ``account: m1234`` alone in
``~/.config/hpccl/sites/polaris.yaml`` sets the account without touching the shipped file. A
file with a new name is a new site; ``extends: polaris`` makes it start from another site.
``--site`` also takes a path to a YAML file.

Every value of a site file is written into job scripts, so none may hold a newline or another
control character (checked on load, naming the key; the renderer refuses them again whatever a
plan's source): a newline in ``slurm.directives.mail-user`` would end its ``#SBATCH`` comment and
start a shell line. Only ``description`` and the queues' ``note`` (shown by ``hpccl sites``, never
written into a script) may span lines. ``setup`` lines are trusted shell, run as written, one
command line per list item; ``launcher`` is shell words (no operators, no command substitution).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from hpccl.core.errors import ConfigError
from hpccl.core.schema import Loader, YamlInputError, load_yaml, ranged, suggest
from hpccl.core import env as hpccl_env

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "site_configs"

# Placeholders a launcher command or a PBS select string may use (filled per job).
PLACEHOLDERS = {
    "ranks": "total MPI ranks (one per GPU)",
    "nodes": "nodes of the job",
    "ranks_per_node": "ranks on each node",
    "gpus_per_node": "GPUs per node of the site",
    "cores_per_node": "CPU cores per node of the site",
    "cores_per_rank": "cores_per_node // ranks_per_node",
    "cpus_per_rank": "cores_per_rank * threads_per_core (hardware threads, Slurm's -c)",
    "local_mpirun": "the local mpirun with the flags `hpccl run -n` uses (absolute path, "
                    "--oversubscribe, --allow-run-as-root as root), already given -np {ranks}",
}

_WALLTIME = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")

# Bounds on what a site file describes, far above any machine (the largest have ~10^4 nodes
# of <= 8 GPUs): a value past them is a typo, such as 1e20 written for 20.
MAX_NODES = 100_000


def parse_walltime(text, what: str = "walltime") -> int:
    """``HH:MM:SS`` (hours may exceed 24) -> seconds; ConfigError naming ``what`` otherwise."""
    m = _WALLTIME.match(str(text).strip()) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"{what}: expected a time as HH:MM:SS (e.g. 01:30:00; hours may exceed "
                          f"24), found {text!r}.")
    h, mi, s = (int(g) for g in m.groups())
    return h * 3600 + mi * 60 + s


def parse_time_limit(text, what: str = "walltime") -> int:
    """A job's time limit: ``HH:MM:SS`` above zero -> seconds. Slurm reads ``--time=0`` (and
    ``00:00:00``) as *no limit*, so a zero limit is refused instead of written; ConfigError
    naming ``what`` (the flag, or the site file and key) otherwise."""
    seconds = parse_walltime(text, what)
    if seconds <= 0:
        raise ConfigError(f"{what}: expected a time limit above zero as HH:MM:SS (e.g. 01:30:00), "
                          f"found {text!r}; a zero limit would reach the scheduler as 'no limit' "
                          "(Slurm's --time=0) instead of a bound on the job.")
    return seconds


def format_walltime(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# Characters that would change a job script's lines, or how a reader sees them: C0 controls
# (newline, carriage return, NUL, tab, escape...), DEL, C1 controls (NEL is a line break to
# Python and some editors) and Unicode's line and paragraph separators.
_UNSAFE_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CHAR_NAMES = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "\t": "a tab",
               "\x1b": "an escape character", "\x7f": "a DEL character"}
ONE_LINE = "text on one line, without newlines or other control characters"
ONE_LINE_WHY = ("values like this are written into the job script, where a newline would end "
                "the line it is on (an #SBATCH/#PBS comment, a quoted shell word) and start a "
                "shell command")


def unsafe_char(text) -> Optional[str]:
    """How the first character of ``text`` that cannot stand on one line of a job script reads
    ('a newline at character 5'), or None when there is none."""
    m = _UNSAFE_CHAR.search(str(text))
    if m is None:
        return None
    c = m.group()
    return f"{_CHAR_NAMES.get(c, f'the control character U+{ord(c):04X}')} at character {m.start() + 1}"


def check_one_line(where: str, value, expected: str = ONE_LINE) -> None:
    """ConfigError naming ``where`` (a flag, or 'FILE: key K') when ``value`` holds a control
    character."""
    what = unsafe_char(value)
    if what:
        raise ConfigError(f"{where}: expected {expected}, found {value!r}. It holds {what}: "
                          f"{ONE_LINE_WHY}.")


def shell_words_problem(text: str) -> Optional[str]:
    """Why ``text`` is not plain shell words, or None. Plain words are what a launcher is written
    into the job script as (``launcher=(WORDS)``): words, '...', "...", $'...' quotes, backslash
    escapes and $VARIABLES, and nothing that ends the words or runs a command: no ; & | ( ) < >,
    no command substitution, no comment, no unclosed quote, no backslash at the end."""
    what = unsafe_char(text)
    if what:
        return what
    quote, i, word_start = None, 0, True
    while i < len(text):
        c = text[i]
        at = f"at character {i + 1}"
        if quote == "'":
            quote = None if c == "'" else quote
        elif quote in ('"', "$'"):
            if c == "\\":
                i += 1
            elif c == quote[-1]:
                quote = None
            elif quote == '"' and (c == "`" or text.startswith("$(", i)):
                return f"a command substitution ({text[i:i + 2] if c == '$' else c}) {at}"
        elif c == "\\":
            if i + 1 == len(text):
                return "a backslash at the end (it would escape what the script writes after it)"
            i += 1
        elif text.startswith("$'", i):
            quote = "$'"
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "`" or text.startswith("$(", i):
            return f"a command substitution ({text[i:i + 2] if c == '$' else c}) {at}"
        elif c in ";&|()<>":
            return f"the shell operator {c!r} {at}"
        elif c == "#" and word_start:
            return f"a comment ('#' at the start of a word) {at}"
        word_start = quote is None and c == " "
        i += 1
    if quote:
        return f"an unclosed {quote} quote"
    return None


def _check_raw_text(loader: Loader, raw, path: str = "") -> None:
    """Refuse a control character in any key or value of a site file's data (before typing, so
    it is the first error), except the free text that never reaches a script."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            sub = f"{path}.{key}" if path else str(key)
            if unsafe_char(key):
                raise loader.error(path or "<top level>", "key names on one line, without control "
                                   "characters", key, f" It holds {unsafe_char(key)}: {ONE_LINE_WHY}.")
            if (path, key) == ("", "description") or (re.fullmatch(r"queues\[\d+\]", path)
                                                      and key == "note"):
                continue
            _check_raw_text(loader, value, sub)
    elif isinstance(raw, (list, tuple)):
        for i, value in enumerate(raw):
            _check_raw_text(loader, value, f"{path}[{i}]")
    elif isinstance(raw, str) and unsafe_char(raw):
        expected = ("one shell command line per list item, without newlines or other control "
                    "characters" if path.startswith("setup[") else ONE_LINE)
        raise loader.error(path, expected, raw, f" It holds {unsafe_char(raw)}: {ONE_LINE_WHY}.")


def _check_template(loader: Loader, path: str, text: str, allowed=PLACEHOLDERS) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise loader.error(path, "a command with {placeholders} (write a literal brace as {{ or }})",
                           text, f" ({e})") from None
    for name in fields:
        if name not in allowed:
            raise ConfigError(f"{loader.source}: key '{path}': unknown placeholder {{{name}}} in "
                              f"{text!r}; known placeholders: "
                              f"{', '.join('{' + k + '}' for k in allowed)}.{suggest(name, allowed)}")


@dataclass
class QueueConfig:
    """One queue (PBS) or partition/QOS (Slurm) and the job sizes and times it admits.

    The same name may appear more than once with different node ranges (a routing queue such
    as Polaris' ``prod`` whose time limit depends on the size)."""
    name: str                          # as the scheduler knows it (-q, --partition or --qos)
    max_nodes: int = ranged(ge=1, le=MAX_NODES)   # the largest job it admits
    max_walltime: str                  # HH:MM:SS, the longest job it admits
    min_nodes: int = ranged(1, ge=1, le=MAX_NODES)   # the smallest job it admits
    min_walltime: str = "00:00:00"     # HH:MM:SS, the shortest job it admits
    auto: bool = True                  # false: used only when asked for with --queue
    max_queued: Optional[int] = ranged(None, ge=1, le=1_000_000)   # jobs one user may have queued in it at once
    note: str = ""                     # shown by hpccl sites (may span lines)

    def check(self, loader: Loader, path: str):
        for key in ("max_walltime", "min_walltime"):
            try:
                parse_walltime(getattr(self, key))
            except ConfigError:
                raise loader.error(f"{path}.{key}", "a time as HH:MM:SS", getattr(self, key)) from None
        if self.max_nodes < self.min_nodes:
            raise loader.error(f"{path}.max_nodes", f"an integer >= min_nodes ({self.min_nodes})",
                               self.max_nodes)
        if parse_walltime(self.max_walltime) <= 0:
            # As for default_walltime: no job fits a queue whose limit is zero (Slurm reads 0 as
            # no limit), and the refusal at submit named neither the file nor the key.
            raise loader.error(f"{path}.max_walltime", "a time limit above zero as HH:MM:SS",
                               self.max_walltime)
        if parse_walltime(self.max_walltime) < parse_walltime(self.min_walltime):
            raise loader.error(f"{path}.max_walltime", f"a time >= min_walltime ({self.min_walltime})",
                               self.max_walltime)

    @property
    def min_s(self) -> int:
        return parse_walltime(self.min_walltime)

    @property
    def max_s(self) -> int:
        return parse_walltime(self.max_walltime)

    def describe(self) -> str:
        nodes = (f"{self.min_nodes}-{self.max_nodes} nodes" if self.min_nodes != self.max_nodes
                 else f"{self.max_nodes} node(s)")
        return f"{nodes}, {self.min_walltime}-{self.max_walltime}"

    def misfit(self, nodes: int, walltime_s: int) -> list[str]:
        """Why this queue does not admit the job (empty when it does)."""
        out = []
        if nodes < self.min_nodes:
            out.append(f"{nodes} node(s) below its minimum {self.min_nodes}")
        if nodes > self.max_nodes:
            out.append(f"{nodes} node(s) above its maximum {self.max_nodes}")
        if walltime_s < self.min_s:
            out.append(f"walltime {format_walltime(walltime_s)} below its minimum {self.min_walltime}")
        if walltime_s > self.max_s:
            out.append(f"walltime {format_walltime(walltime_s)} above its maximum {self.max_walltime}")
        return out


@dataclass
class GpuAffinityConfig:
    """How each rank gets its GPU.

    none:     every rank sees all GPUs of its node and takes cuda:<node-local rank> (hpccl's default)
    launcher: the launcher binds one GPU per rank (e.g. srun --gpus-per-task=1)
    wrapper:  hpccl writes gpu_affinity.sh into the run directory; it sets CUDA_VISIBLE_DEVICES
              from the node-local rank in ``local_rank_var`` (reversed with ``reverse``)
    """
    mode: Literal["none", "launcher", "wrapper"] = "none"   # none: cuda:<local rank>; launcher: it binds; wrapper: gpu_affinity.sh
    local_rank_var: str = "OMPI_COMM_WORLD_LOCAL_RANK"   # wrapper: the variable holding the node-local rank
    reverse: bool = False                     # wrapper: give GPUs in reverse order (as ALCF's Polaris script)

    def check(self, loader: Loader, path: str):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.local_rank_var):
            raise loader.error(f"{path}.local_rank_var", "an environment variable name",
                               self.local_rank_var)


@dataclass
class SlurmConfig:
    queue_option: Literal["partition", "qos"] = "partition"   # what a queue name is to Slurm
    constraint: Optional[str] = None          # -C, e.g. gpu
    gpu_request: Literal["gpus-per-node", "gres", "none"] = "gpus-per-node"   # how GPUs are asked for
    signal_seconds: int = ranged(300, ge=0, le=86400)   # --signal=B:USR1@N: warning before the time limit
    requeue: bool = True                      # --requeue, and scontrol requeue on exit code 99
    exclusive: bool = False                   # --exclusive: whole nodes
    directives: dict = field(default_factory=dict)   # more #SBATCH --KEY=VALUE (true: a bare flag)

    def check(self, loader: Loader, path: str):
        _check_directives(loader, f"{path}.directives", self.directives)


@dataclass
class PbsConfig:
    select: str = "{nodes}:ncpus={cores_per_node}:ngpus={gpus_per_node}"   # -l select=...
    place: Optional[str] = "scatter"          # -l place=...
    rerunnable: bool = True                   # -r y
    requeue: Literal["resubmit", "qrerun", "none"] = "resubmit"   # on exit code 99
    signal_seconds: int = ranged(300, ge=0, le=86400)   # the script's own timer: USR1 this long before the end
    directives: dict = field(default_factory=dict)   # more #PBS -l KEY=VALUE

    def check(self, loader: Loader, path: str):
        _check_template(loader, f"{path}.select", self.select,
                        {k: v for k, v in PLACEHOLDERS.items() if k != "local_mpirun"})
        _check_directives(loader, f"{path}.directives", self.directives)


def _check_directives(loader: Loader, path: str, directives: dict) -> None:
    for key, value in directives.items():
        if not isinstance(key, str) or not re.fullmatch(r"-?[A-Za-z][A-Za-z0-9_-]*", key):
            raise loader.error(f"{path}", "option names such as 'mail-type' (letters, digits, -)", key)
        if not isinstance(value, (str, int, float, bool)) or value is False:
            raise loader.error(f"{path}.{key}", "a string, a number, or true for a bare flag", value)


@dataclass
class NetworkConfig:
    """Links of the machine, for the scaling model (``hpccl model``)."""
    intra_node_latency_us: float = ranged(5.0, gt=0, le=1e6)        # GPU to GPU inside a node (NVLink class)
    intra_node_bandwidth_gbs: float = ranged(100.0, gt=0, le=1e5)   # GB/s per GPU
    inter_node_latency_us: float = ranged(10.0, gt=0, le=1e6)       # across the network
    inter_node_bandwidth_gbs: float = ranged(25.0, gt=0, le=1e5)    # GB/s: allreduce bus bandwidth across nodes (NCCL busbw)
    # The node's NICs: a rehearsal get crosses its owner's NIC, shared by that node's ranks
    # (null: the model takes inter_node_bandwidth_gbs for it)
    nics_per_node: Optional[int] = ranged(None, ge=1, le=64)
    nic_bandwidth_gbs: Optional[float] = ranged(None, gt=0, le=1e4)     # GB/s one NIC moves (osu_bw)


@dataclass
class SiteConfig:
    """One machine. The name is the file's name (polaris.yaml -> polaris)."""
    scheduler: Literal["slurm", "pbs", "none"]   # none: the script runs in the background under the local mpirun
    gpus_per_node: int = ranged(ge=1, le=1024)         # one rank per GPU; CPU-only sites: ranks per node
    launcher: str                             # command before `python -m hpccl run`: shell words, {placeholders}
    description: str = ""                     # shown by hpccl sites (may span lines)
    cores_per_node: Optional[int] = ranged(None, ge=1, le=65536)      # null: the cores of the machine running hpccl submit
    threads_per_core: int = ranged(1, ge=1, le=16)   # hardware threads per core (fills {cpus_per_rank})
    memory_per_node_gb: Optional[float] = ranged(None, gt=0, le=1e6)   # host memory; null: this machine's (scheduler none) or unchecked
    gpus: Optional[bool] = True              # ranks run on GPUs; false: CPU ranks; null: whether this machine has one
    queues: list[QueueConfig] = field(default_factory=list)   # first fit, in this order
    max_nodes: Optional[int] = ranged(None, ge=1, le=MAX_NODES)           # for sites without queues (scheduler: none)
    default_walltime: str = "01:00:00"        # HH:MM:SS, used without --walltime
    account: Optional[str] = None             # -A / --account (project to charge)
    account_required: bool = False            # refuse to submit without an account
    filesystems: list[str] = field(default_factory=list)   # PBS -l filesystems=a:b, Slurm --licenses=a,b
    module_paths: list[str] = field(default_factory=list)  # module use ...
    modules: list[str] = field(default_factory=list)       # module load ...
    env: dict = field(default_factory=dict)                # export KEY=VALUE
    # Shell command lines run before the launch, each as written (trusted shell: whoever writes
    # the site file runs commands in its jobs); one line per item, written as `eval 'LINE'` so
    # that an unclosed quote or a here-document cannot reach into the lines after it.
    setup: list[str] = field(default_factory=list)
    python: Optional[str] = None              # null: the Python running hpccl submit
    shell: str = "/bin/bash"                  # the script's #! line: an absolute path (and one argument)
    gpu_affinity: GpuAffinityConfig = field(default_factory=GpuAffinityConfig)   # how each rank gets its GPU
    slurm: SlurmConfig = field(default_factory=SlurmConfig)   # Slurm-only settings
    pbs: PbsConfig = field(default_factory=PbsConfig)   # PBS-only settings
    network: NetworkConfig = field(default_factory=NetworkConfig)
    extends: Optional[str] = None             # start from another site's file

    # Set by load_site (deliberately not dataclass fields, so not keys of the file).
    name = ""
    sources = ()
    given = ""          # as the user named it: a name, or a site file's path

    @property
    def label(self) -> str:
        """The site as errors name it: with the file's path when the user gave one (its name
        alone, the file's stem, would not say which file to fix)."""
        return f"site '{self.name}'" + (f" ({self.given})" if self.given and self.given != self.name else "")

    def check(self, loader: Loader, path: str):
        _check_template(loader, "launcher", self.launcher)
        problem = shell_words_problem(self.launcher)
        if problem:
            raise loader.error("launcher", "a command as shell words (words, quotes, $VARIABLES and "
                               "{placeholders}; no ; & | ( ) < >, command substitution or comment: "
                               "the launcher is written into the script as launcher=(WORDS))",
                               self.launcher, f" It holds {problem}.")
        if not re.fullmatch(r"/\S+( \S+)?", self.shell):
            raise loader.error("shell", "an absolute path to the script's shell and at most one "
                               "argument, such as '/bin/bash -l' (the #! line passes the rest to the "
                               "shell as one argument)", self.shell)
        try:
            parse_walltime(self.default_walltime)
        except ConfigError:
            raise loader.error("default_walltime", "a time as HH:MM:SS", self.default_walltime) from None
        try:
            parse_time_limit(self.default_walltime)
        except ConfigError:
            raise loader.error("default_walltime", "a time limit above zero as HH:MM:SS (a zero limit "
                               "reaches the scheduler as 'no limit')", self.default_walltime) from None
        if self.scheduler == "none":
            if self.queues:
                raise loader.error("queues", "no queues for 'scheduler: none' (use max_nodes)",
                                   [q.name for q in self.queues])
        elif not self.queues:
            raise ConfigError(f"{loader.source}: key 'queues': a '{self.scheduler}' site needs at "
                              "least one queue (name, max_nodes, max_walltime), found none.")
        for key, value in self.env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)):
                raise loader.error("env", "environment variable names as keys", key)
            if not isinstance(value, (str, int, float, bool)):
                raise loader.error(f"env.{key}", "a string or number", value)
        for i, name in enumerate(self.filesystems):
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise loader.error(f"filesystems[{i}]", "a filesystem name such as 'eagle'", name)

    def queue_names(self) -> list[str]:
        return list(dict.fromkeys(q.name for q in self.queues))


# --- finding and merging site files -----------------------------------------------------------------

def site_dirs(env=os.environ) -> list[tuple[str, Path]]:
    """(label, directory) in increasing precedence."""
    dirs = [("shipped", SHIPPED_DIR)]
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs.append(("user", config_home / "hpccl" / "sites"))
    for part in hpccl_env.read("HPCCL_SITE_DIR", env).split(os.pathsep):
        if part:
            dirs.append(("HPCCL_SITE_DIR", Path(part)))
    return dirs


def available_sites(env=os.environ) -> dict[str, list[Path]]:
    """Site name -> its files, in merge order."""
    out: dict[str, list[Path]] = {}
    for _, d in site_dirs(env):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                out.setdefault(p.stem, []).append(p)
    return dict(sorted(out.items()))


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:        # bytes: load_yaml checks the encoding
            raw = load_yaml(f)
    except OSError as e:
        raise ConfigError(f"site file {str(path)!r} cannot be read: {e.strerror}.") from None
    except YamlInputError as e:
        raise ConfigError(f"{path}: {e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of site keys (scheduler, gpus_per_node, "
                          f"launcher, queues, ...) at the top level, found {type(raw).__name__}.")
    return raw


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _raw_site(name: str, env, seen: tuple = ()) -> tuple[dict, list[str]]:
    if name in seen:
        raise ConfigError(f"site '{name}': 'extends' goes round in a circle: "
                          f"{' -> '.join(seen + (name,))}.")
    as_path = Path(name).expanduser()
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if not as_path.is_file():
            raise ConfigError(f"site file {name!r} does not exist (or is not a file).")
        files = [as_path]
    else:
        files = available_sites(env).get(name, [])
        if not files:
            known = list(available_sites(env))
            raise ConfigError(f"unknown site {name!r}; known sites: {', '.join(known) or 'none'}."
                              f"{suggest(name, known)} HINT: `hpccl sites` lists them and where they "
                              "are read from; add your own by copying one into ~/.config/hpccl/sites/.")
    raw: dict = {}
    sources: list[str] = []
    for path in files:
        raw = deep_merge(raw, _read_yaml(path))
        sources.append(str(path))
        parent = raw.get("extends")
        if parent is not None and len(sources) == 1:
            if not isinstance(parent, str):
                raise ConfigError(f"{path}: key 'extends': expected a site name, found {parent!r}.")
            try:
                base, base_sources = _raw_site(parent, env, seen + (name,))
            except ConfigError as e:
                if str(e).startswith(f"{path}:"):
                    raise
                raise ConfigError(f"{path}: key 'extends': {e}") from None
            raw = deep_merge(base, raw)
            sources = base_sources + sources
    return raw, sources


def load_site(name: str, env=os.environ) -> SiteConfig:
    """Find, merge and validate a site; errors name the file(s), the key and what was expected."""
    check_one_line("site", name, "a site name or a site file's path on one line, without "
                   "newlines or other control characters")
    raw, sources = _raw_site(name, env)
    source = sources[-1] if len(sources) == 1 else f"{sources[-1]} (merged over {', '.join(sources[:-1])})"
    loader = Loader(source)
    _check_raw_text(loader, raw)
    site = loader.section(SiteConfig, raw, "")
    site.name = Path(name).stem if (name.endswith((".yaml", ".yml")) or os.sep in name) else name
    site.sources = sources
    site.given = name
    return site


def site_as_dict(site: SiteConfig) -> dict:
    """The resolved site as YAML-ready data (only the section of its own scheduler)."""
    # 'extends' is already merged in: shown, it would read as a further layer to apply.
    left_out = {"extends", "slurm", "pbs"} - {site.scheduler}
    return {key: value for key, value in dataclasses.asdict(site).items() if key not in left_out}


# --- layout and queues ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    gpus: int
    nodes: int
    ranks_per_node: int


def plan_layout(site: SiteConfig, gpus: int) -> Layout:
    """Fewest nodes for ``gpus`` ranks with the same number of ranks on every node."""
    if gpus < 1:
        raise ConfigError(f"--gpus: expected a number of GPUs >= 1, found {gpus}.")
    per = site.gpus_per_node
    nodes = math.ceil(gpus / per)
    if gpus % nodes:
        near = sorted({(gpus // per) * per or per, nodes * per})
        raise ConfigError(f"--gpus {gpus}: {site.label} has {per} GPUs per node, and {gpus} GPUs "
                          f"do not split evenly over {nodes} nodes (every node runs the same number of "
                          f"ranks). HINT: use {' or '.join(map(str, near))} GPUs.")
    return Layout(gpus=gpus, nodes=nodes, ranks_per_node=gpus // nodes)


def select_queue(site: SiteConfig, nodes: int, walltime_s: int, requested: Optional[str] = None,
                 taken: Optional[dict] = None) -> Optional[QueueConfig]:
    """The first queue (in the site's order) that admits the job, or a ConfigError listing every
    queue and the limit it hit. ``taken`` counts jobs already placed per queue (sweeps), checked
    against ``max_queued``. Sites without queues check ``max_nodes`` only and return None."""
    wall = format_walltime(walltime_s)
    if not site.queues:
        if requested:
            raise ConfigError(f"--queue {requested}: {site.label} has no queues "
                              f"(scheduler: {site.scheduler}).")
        if site.max_nodes is not None and nodes > site.max_nodes:
            raise ConfigError(f"{site.label}: the job needs {nodes} node(s) and the site has at "
                              f"most {site.max_nodes} (max_nodes); nothing was submitted.")
        return None
    taken = taken or {}
    candidates = site.queues
    if requested:
        candidates = [q for q in site.queues if q.name == requested]
        if not candidates:
            names = site.queue_names()
            raise ConfigError(f"--queue {requested}: {site.label} has no such queue; its queues: "
                              f"{', '.join(names)}.{suggest(requested, names)}")
    else:
        candidates = [q for q in site.queues if q.auto]
    reasons = []
    for q in candidates:
        why = q.misfit(nodes, walltime_s)
        if not why and q.max_queued is not None and taken.get(q.name, 0) >= q.max_queued:
            why = [f"it admits {q.max_queued} queued job(s) per user, already used by this sweep"]
        if not why:
            return q
        note = f", {q.note}" if q.note else ""
        reasons.append(f"{q.name} ({q.describe()}{note}): {'; '.join(why)}")
    hint = ""
    manual = [q.name for q in site.queues if not q.auto and not requested]
    if manual:
        hint = f" Queues used only when named with --queue: {', '.join(dict.fromkeys(manual))}."
    raise ConfigError(f"{site.label}: no queue admits a job of {nodes} node(s) for {wall}; "
                      f"nothing was submitted. " + " | ".join(reasons) + "." + hint +
                      " HINT: change --gpus or --walltime, or name a queue with --queue.")
