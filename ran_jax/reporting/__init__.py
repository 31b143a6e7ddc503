"""What a run reports: metric writers and TensorBoard mask images."""
