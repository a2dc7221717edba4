"""Test-wide settings."""

import os

import torch

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads
# that wait for each other make a 2-s training run take a minute. One thread also makes runs
# bitwise repeatable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
