"""Input data: dataset builders and input pipelines."""
