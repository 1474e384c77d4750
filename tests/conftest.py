import torch

# One thread, as every learn_simple worker has: on a 2-core machine with anything else running, OpenMP's
# threads spin against each other and small updates get many times slower.
torch.set_num_threads(1)
