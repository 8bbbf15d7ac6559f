"""Experiment files for tests: a fixture with some of its text changed."""

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_variant(
    directory: Path, fixture: str, replacements: dict[str, str], name: str = "variant.py"
) -> Path:
    """`tests/fixtures/<fixture>` with each key replaced by its value, written to
    `directory/name`. Every key must occur, so that editing a fixture cannot quietly leave a
    test testing the unchanged file."""
    source = (FIXTURES / fixture).read_text()
    for old, new in replacements.items():
        assert old in source, f"{fixture} has no {old!r}"
        source = source.replace(old, new)
    path = directory / name
    path.write_text(source)
    return path
