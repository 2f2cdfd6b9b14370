"""The core every job kind runs on: MPI world, backends, schema, logs, checkpoints,
run session, kind registry. It knows no job kind (an import-linter contract)."""
