"""Planning for accelerators: TPU types and the memory of the compiled steps."""
