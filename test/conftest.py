"""Test-session settings shared by every test module."""
import os

import torch

# Small tensors on a loaded 2-core machine run far faster single-threaded.
torch.set_num_threads(int(os.environ.get("ROBOT_PACKER_THREADS", "1")))
