import os

import torch

# One thread, as every learn_simple worker has: on a 2-core machine with anything else running, OpenMP's
# threads spin against each other and small updates get many times slower.
torch.set_num_threads(1)

# Two cores at most, as on the lab's CI machine, for the tests and every process they start: the runners'
# default worker count and the local Ray instances (which take the cores this process may use) are then
# those of CI on any machine.
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
