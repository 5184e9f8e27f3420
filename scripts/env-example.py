"""Regenerate config/geopush.env.example from the Settings model (run after adding a setting)."""

from pathlib import Path

from streams.settings import Settings

HEADER = """# geopush settings: every GEOPUSH_* variable, with its default. Copy, edit, export.
# Unknown GEOPUSH_* variables and invalid values stop the process with a message naming them.
"""


def render() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        default = field.default
        lines.append(f"# {field.description}")
        var = f"GEOPUSH_{name.upper()}"
        if default is None:
            lines.append(f"# {var}=")
            continue
        if isinstance(default, bool):
            value = str(default).lower()
        elif isinstance(default, Path):
            value = str(default).replace(str(Path.home()), "~")
        else:
            value = str(default)
        lines.append(f"{var}={value}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path("config/geopush.env.example").write_text(render())
