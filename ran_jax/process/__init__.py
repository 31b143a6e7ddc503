"""The process: errors and exit statuses, stop signals, the JAX backends of a host."""
