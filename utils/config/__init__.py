"""Configuration: every setting declared once (schema.py), mirrored by configs/config.yaml; YAML and flags."""
