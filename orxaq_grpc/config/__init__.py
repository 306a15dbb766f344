"""Configuration: the catalog, lanes and policy in `config/`."""
