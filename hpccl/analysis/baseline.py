"""A published baseline for ``hpccl model --baseline-file``: the terms a 1-rank run would give,
read from a YAML file where each one carries the figure's source, for predictions where no run
of the model on the target hardware exists (no GPU here: the compute term is a vendor's).

    name: resnet50_a100_amp
    device: cuda                 # cuda: the allreduce is NCCL's (ring or tree); cpu: gloo / MPI
    backend: horovod
    async_rehearsal: true
    terms:
      compute_s_per_sample: {value: 4.05e-4, source: "NVIDIA DeepLearningExamples ..."}
      gradient_bytes: {value: 102228128, source: "25,557,032 parameters x 4 bytes (fp32 gradients)"}
      ...

Every term of ``REQUIRED`` must be there with a number and a non-empty source; ``OPTIONAL``
terms default to 0 and their source then says so. A missing, unknown or non-numeric term is
refused (HpcclError naming the file and the term), so a typo never becomes a silent 0.
"""

from __future__ import annotations

import math
import os

import yaml

from hpccl.analysis.model import Measured
from hpccl.core.errors import HpcclError
from hpccl.core.schema import load_yaml

INTEGER = ("gradient_bytes", "sample_bytes", "batch", "representatives", "candidates", "samples_per_epoch")
REQUIRED = ("compute_s_per_sample", "fetch_s_per_rep", "insert_s_per_candidate") + INTEGER
OPTIONAL = ("data_s_per_sample", "step_s", "other_s", "fetch_s_per_owner", "handoff_s")
TOP = {"name", "description", "device", "backend", "async_rehearsal", "terms"}
BACKENDS = ("horovod", "torch", "mpi")


def _fail(path: str, what: str) -> HpcclError:
    return HpcclError(f"baseline file {path!r}: {what}. Expected a mapping with 'device' (cuda or cpu), "
                      f"'backend' ({', '.join(BACKENDS)}), 'async_rehearsal' (true/false) and 'terms', each "
                      "term {value: NUMBER, source: TEXT}; required terms: " + ", ".join(REQUIRED)
                      + "; optional (0 when absent): " + ", ".join(OPTIONAL) + ".")


def load_baseline(path: str) -> Measured:
    """The ``Measured`` terms of a published baseline; ``sources`` holds each term's source."""
    if not os.path.isfile(path):
        raise HpcclError(f"baseline file {path!r} does not exist; expected a YAML file such as "
                         "benchmarks/published/resnet50_a100_amp.yaml.")
    try:
        with open(path, encoding="utf-8") as f:
            doc = load_yaml(f.read())     # hpccl's strict reader: no recursion past its depth limit
    except yaml.YAMLError as e:
        raise _fail(path, f"is not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise _fail(path, f"is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(doc, dict):
        raise _fail(path, f"found {type(doc).__name__} at the top level")
    unknown = sorted(set(doc) - TOP)
    if unknown:
        raise _fail(path, f"unknown top-level key(s) {', '.join(map(repr, unknown))}")
    device, backend = doc.get("device"), doc.get("backend")
    if device not in ("cuda", "cpu"):
        raise _fail(path, f"'device' is {device!r}")
    if backend not in BACKENDS:
        raise _fail(path, f"'backend' is {backend!r}")
    if not isinstance(doc.get("async_rehearsal"), bool):
        raise _fail(path, f"'async_rehearsal' is {doc.get('async_rehearsal')!r}, not true or false")
    terms = doc.get("terms")
    if not isinstance(terms, dict):
        raise _fail(path, f"'terms' is {type(terms).__name__}, not a mapping")
    unknown = sorted(set(terms) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _fail(path, f"unknown term(s) {', '.join(map(repr, unknown))}")
    missing = [t for t in REQUIRED if t not in terms]
    if missing:
        raise _fail(path, f"missing term(s) {', '.join(missing)}")
    values, sources = {}, {}
    for name in REQUIRED + OPTIONAL:
        if name not in terms:
            values[name], sources[name] = 0.0, "not given: 0"
            continue
        term = terms[name]
        value = term.get("value") if isinstance(term, dict) else None
        source = term.get("source") if isinstance(term, dict) else None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0 or (name in INTEGER and value != int(value))):
            raise _fail(path, f"term {name!r} has value {value!r}; expected a finite number >= 0"
                        + (" (a whole number)" if name in INTEGER else ""))
        if not isinstance(source, str) or not source.strip():
            raise _fail(path, f"term {name!r} has no 'source' (where its number comes from)")
        values[name] = int(value) if name in INTEGER else float(value)
        sources[name] = source.strip()
    if values["compute_s_per_sample"] <= 0 or values["batch"] <= 0:
        raise _fail(path, "'compute_s_per_sample' and 'batch' must be above 0")
    return Measured(ranks=1, device=device, backend=backend, async_rehearsal=doc["async_rehearsal"],
                    sources={**sources, "baseline": path}, **values)
