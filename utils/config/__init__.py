"""Configuration: defaults in configs/config.yaml merged with a YAML file and CLI flags."""
