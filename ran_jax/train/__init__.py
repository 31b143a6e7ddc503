"""Training: mesh, optimizer, train state, steps, checkpoints and the training loop."""
