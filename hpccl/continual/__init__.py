"""The continual kind: class-incremental tasks, learners, the distributed rehearsal
buffer, LoRA adapters, evaluation and metrics, and its report."""
