"""Training the risk head: data sets, losses, metrics, the training loop, fine-tuning and its plots."""
