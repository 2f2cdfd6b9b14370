"""hpccl: continual learning at supercomputer scale."""
__version__ = "0.1.0"
