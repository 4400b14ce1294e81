"""A small nucleus network trained by `training/train_nucleus_net.py`, shipped with the package."""
