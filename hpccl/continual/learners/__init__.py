"""Learners: what to train on as tasks arrive."""
