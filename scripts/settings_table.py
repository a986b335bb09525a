"""Print the README's configuration table from the settings classes."""

from __future__ import annotations

from core.settings import settings_classes


def rows() -> list[str]:
    out = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            default = field.default
            shown = "(empty)" if default == "" else str(default)
            out.append(f"| `{prefix}{name.upper()}` | `{shown}` | {field.description} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
