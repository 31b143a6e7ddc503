"""The experiment configs: their checks, the network a config names, the catalogue."""
