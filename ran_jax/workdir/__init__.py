"""What a run keeps in its work directory: checkpoints, its record, its lock."""
