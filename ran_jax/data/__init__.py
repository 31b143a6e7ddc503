"""The input: data sources, dataset builders, input pipelines and normalisation."""
