"""Configuration: every setting declared once (schema.py) with its policy (policy.py); YAML and flags merged
onto the declared defaults (loading.py, cli.py) into a typed `schema.Config`; config.yaml is generated."""
