"""Training: per-worker loop, TorchTrainer setup, losses, metrics."""
