"""LoRAC-IPC (Ling et al., arXiv 2504.13407): continual learning on a frozen pre-trained ViT
with composed per-task LoRA adapters, an orthogonality regulariser, and importance-based
freezing of critical (layer, matrix) pairs. ``learner.py`` is the ``lorac`` learner; per task::

    model.begin_task(t); tracker.reset()
    opt = torch.optim.AdamW(param_groups(model, lr, omega_lr_scale))   # new per task
    fit(model, opt, ..., loss_fn=task_loss(model, task_classes, ortho_weight),
        after_step=tracker.update)                                      # learners/loop.py
    model.end_task(); tracker.freeze_top()

``pretrain.py`` is ``hpccl pretrain`` (a backbone for offline use), ``jobconfig.py`` the
``lora`` and ``pretrain`` sections of a job file.
"""

from hpccl.core.exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "hpccl.continual.lora.composed": "MATRICES LoRACViT TaskAdapter pair_key",
    "hpccl.continual.lora.ipc": "IPCTracker",
    "hpccl.continual.lora.ortho": "gram_penalty orthogonality_penalty",
    "hpccl.continual.lora.training": "param_groups task_loss trainable_parameters",
})
