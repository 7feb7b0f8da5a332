"""The training worker: runs one job in its own process (or torch.distributed group)."""
