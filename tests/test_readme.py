"""The README's tables are copies of definitions elsewhere: keep them true."""
import re
from pathlib import Path

from multimodal import serve
from multimodal.hyperparameters import load_spec_document

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_hyperparameter_table_matches_the_spec():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \| (\w+) \| `([^`]*)` \| (.*?) \|", README,
                                                       re.M)}
    spec = load_spec_document()
    assert set(rows) >= {e["Name"] for e in spec}
    for entry in spec:
        row = rows[entry["Name"]]
        assert f"| {entry['Type']} | `{entry['DefaultValue']}` |" in row, row
        body = next(iter(entry["Range"].values()))
        if "Values" in body:
            assert ", ".join(f"`{v}`" for v in body["Values"]) in row
        else:
            assert f"{body['MinValue']} – {body['MaxValue']}" in row
        assert entry["Description"] in README


def test_server_settings_table_is_the_one_serve_documents():
    start = serve.__doc__.index("| name | default | meaning |")
    end = serve.__doc__.index("`OMP_NUM_THREADS`, `MKL_NUM_THREADS`")
    assert serve.__doc__[start:end].strip() in README


def test_quick_start_commands_exist():
    assert "./setup.sh && .venv/bin/multimodal example" in README
    assert "./setup.sh && ./run-tests.sh" in README
