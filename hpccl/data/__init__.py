"""Datasets (HDF5 format, converters) and scenarios (what arrives, sharded per rank)."""
