"""LoRAC-IPC (Ling et al., arXiv 2504.13407): continual learning on a frozen pre-trained ViT
with composed per-task LoRA adapters, an orthogonality regulariser, and importance-based
freezing of critical (layer, matrix) pairs.

Per task t::

    model.begin_task(t); tracker.reset()
    opt = torch.optim.AdamW(param_groups(model, lr, omega_lr_scale))   # new per task
    for x, y in batches: train_step(model, opt, x, y, task_classes, ortho_weight, tracker)
    model.end_task(); tracker.freeze_top()
    evaluate_class_incremental(model, x_test, y_test, seen_classes)
"""

from hpccl.lora.composed import MATRICES, LoRACViT, TaskAdapter, pair_key
from hpccl.lora.ipc import IPCTracker
from hpccl.lora.ortho import gram_penalty, orthogonality_penalty
from hpccl.lora.training import (allreduce_bytes, class_mask, evaluate_class_incremental, mask_logits,
                                 masked_cross_entropy, param_groups, predict_seen, train_step,
                                 trainable_parameters)

__all__ = ["MATRICES", "LoRACViT", "TaskAdapter", "pair_key", "IPCTracker", "gram_penalty",
           "orthogonality_penalty", "allreduce_bytes", "class_mask", "evaluate_class_incremental",
           "mask_logits", "masked_cross_entropy", "param_groups", "predict_seen", "train_step",
           "trainable_parameters"]
