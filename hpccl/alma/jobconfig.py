"""What a ``scenario: megabatch`` job may say about its learner (ALMA; keys documented in
:mod:`hpccl.alma.job`). Owned by the ALMA capability; hpccl.config calls ``check_alma_job``."""

from __future__ import annotations

from hpccl.core.errors import ConfigError
from hpccl.core.schema import suggest

# learner kind -> {option: (expected, validator)}; values pass straight to make_alma_learner
# except 'start' (SingleModel's mode) and 'groups' (placement over rank groups, hpccl.alma.job).
_CHOICE = lambda *c: (" or ".join(map(repr, c)), lambda v: v in c)  # noqa: E731
_POS_INT = ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
_OPT_INT = ("an integer >= 1 or null", lambda v: v is None or _POS_INT[1](v))
_NONNEG = ("a number >= 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)

ALMA_LEARNER_OPTIONS = {
    "single": {"start": _CHOICE("finetune", "reinit")},
    "growing_ensemble": {"init": _CHOICE("copy", "fresh"), "groups": _POS_INT},
    "fixed_ensemble": {"size": _POS_INT, "train": _CHOICE("all", "round_robin"), "groups": _POS_INT},
    "growing_moe": {"split_every": _POS_INT, "max_experts": _OPT_INT, "split_noise": _NONNEG},
}
ALMA_LEARNER_KINDS = tuple(ALMA_LEARNER_OPTIONS)


def check_alma_job(cfg, source: str) -> None:
    """Cross-section checks of a megabatch job: learner kind and options, model, groups."""
    kind, options = cfg.learner.kind, cfg.learner.options
    if kind not in ALMA_LEARNER_OPTIONS:
        raise ConfigError(f"{source}: key 'learner.kind': 'scenario: megabatch' takes one of the ALMA "
                          f"learners {', '.join(map(repr, ALMA_LEARNER_KINDS))}, found {kind!r}."
                          f"{suggest(kind, ALMA_LEARNER_KINDS)}")
    known = ALMA_LEARNER_OPTIONS[kind]
    for key, value in options.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key 'learner.{key}' for ALMA learner '{kind}'; its "
                              f"options are: {', '.join(known)}.{suggest(key, known)}")
        expected, ok = known[key]
        if not ok(value):
            raise ConfigError(f"{source}: key 'learner.{key}': expected {expected}, found {value!r}.")
    if kind == "growing_moe" and cfg.model.kind != "moe":
        raise ConfigError(f"{source}: key 'model.kind': learner 'growing_moe' grows a mixture of experts "
                          f"and needs 'model: {{kind: moe}}', found {cfg.model.kind!r}.")
    if kind == "fixed_ensemble" and options.get("groups", 1) > options.get("size", 3):
        raise ConfigError(f"{source}: key 'learner.groups': expected at most learner.size "
                          f"({options.get('size', 3)}) rank groups, found {options['groups']}.")
