#!/bin/bash
# One GPU per rank for site 'polaris', written by `hpccl submit`: the launcher runs
# this before every rank; it sets CUDA_VISIBLE_DEVICES from the node-local rank and runs the rank.
local_rank=${PMI_LOCAL_RANK:-${PALS_LOCAL_RANKID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-0}}}}
num_gpus=4
gpu=$(( num_gpus - 1 - local_rank % num_gpus ))   # reverse order: the GPU nearest the rank's cores
export CUDA_VISIBLE_DEVICES=$gpu
exec "$@"
