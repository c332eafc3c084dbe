"""docs/configuration.md is generated from the settings models: it must match them, and every
field must say what it is for."""

import difflib
import re
from pathlib import Path

import yaml

from ml_platform import config_reference
from ml_platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / config_reference.DOC_PATH


def test_configuration_page_is_generated_from_the_settings():
    expected = config_reference.render()
    actual = PAGE.read_text() if PAGE.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=str(config_reference.DOC_PATH),
                tofile="render()",
                n=1,
            )
        )
        raise AssertionError(
            f"{config_reference.DOC_PATH} is out of date with ml_platform/settings/; regenerate it with\n\n"
            f"    make docs     (or: .venv/bin/{config_reference.COMMAND})\n\n{diff[:4000]}"
        )


def test_every_field_has_a_description():
    missing = config_reference.missing_descriptions()
    assert not missing, "settings fields without a description (give each a Field(..., description=...)): " + ", ".join(
        missing
    )


def test_every_key_is_on_the_page():
    page = config_reference.render()
    for entry in config_reference.walk(Settings):
        if entry.model is None:
            assert f"| `{entry.path}` |" in page, entry.path
        else:
            assert f"### `{entry.path}" in page, entry.path


def test_defaults_and_constraints_come_from_the_fields():
    page = config_reference.render()
    row = next(line for line in page.splitlines() if line.startswith("| `models.<name>.gate.confidence`"))
    assert "[0.5, 1)" in row and "`0.9`" in row
    row = next(line for line in page.splitlines() if line.startswith("| `models.<name>.retrain.schedule`"))
    assert "`0 3 * * 1`" in row
    row = next(line for line in page.splitlines() if line.startswith("| `models.<name>.task`"))
    assert "`classification` or `regression`" in row and "**required**" in row
    row = next(line for line in page.splitlines() if line.startswith("| `models.<name>.training.windows`"))
    assert '`["all", "newest", "regime"]`' in row and "at least 1 item" in row


def test_the_example_on_the_page_is_a_valid_configuration():
    example = re.search(r"```yaml\n(.*?)```", config_reference.render(), re.S).group(1)
    Settings.model_validate(yaml.safe_load(example))
