"""The training loop and its step: mesh, optimizer, train state, steps, metrics, fine-tuning."""
