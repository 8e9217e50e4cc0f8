"""The two generated views of the declarations: docs/settings.md's table and configs/config.yaml.

`python -m utils.config.render` prints the table; `python -m utils.config.render --yaml > configs/config.yaml`
writes the (never read) config.yaml. tests/test_schema.py fails when either is out of date.
"""

from __future__ import annotations

import argparse

from utils.config.schema import SECTION_TITLES, SETTINGS, Setting, yaml_value


def markdown_table() -> str:
    """docs/settings.md's table: key, default, allowed values, flags, changes scores, meaning."""
    rows = [
        "| key | default | allowed | flag of | changes scores | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in SETTINGS.items():
        allowed = " \\| ".join(map(str, s.info.choices)) or _range_text(s)
        scores = {"value": "yes", "identity": "yes (what it names)"}.get(s.policy.fingerprint or "", "no")
        flag = ", ".join(s.policy.scripts) or "YAML only"
        meaning = s.info.help.replace("|", "\\|")
        rows.append(f"| `{name}` | `{yaml_value(s.default)}` | {allowed} | {flag} | {scores} | {meaning} |")
    return "\n".join(rows) + "\n"


def _range_text(s: Setting) -> str:
    low, high = s.info.minimum, s.info.maximum
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    if s.kind is list and s.item is not None:
        return f"list of {s.item.__name__}"
    return "" if s.kind not in (list, dict) else s.kind.__name__


CONFIG_YAML_HEADER = """\
# GENERATED from the declarations (utils/config/schema.py, model/settings.py ScoringSettings): do not edit.
# Regenerate: python -m utils.config.render --yaml > configs/config.yaml   (tests/test_schema.py checks it)
# Every key with its default. No script reads this file: the declarations are the defaults. Copy the keys
# you change into your own YAML (like configs/mvtec.yaml) and pass it with --config; CLI flags (same names)
# override that file. Unknown keys or values of the wrong type are an error.
"""


def config_yaml() -> str:
    """configs/config.yaml: every key with its default and help, in sections (generated, never read)."""
    lines = [CONFIG_YAML_HEADER.rstrip("\n")]
    for section, title in SECTION_TITLES.items():
        lines += ["", f"# --- {title} ".ljust(104, "-")]
        for name, s in SETTINGS.items():
            if s.info.section == section:
                lines.append(f"{f'{name}: {yaml_value(s.default)}':<30} # {s.info.help}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m utils.config.render [--yaml]: the settings table, or config.yaml
    parser = argparse.ArgumentParser(description="print the generated settings table or configs/config.yaml")
    parser.add_argument("--yaml", action="store_true", help="print configs/config.yaml instead of the table")
    print(config_yaml() if parser.parse_args().yaml else markdown_table(), end="")
