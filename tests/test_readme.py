"""The README's tables are copies of definitions elsewhere: keep them true."""
import ast
import re
from pathlib import Path

from multimodal.core.hyperparameters import load_spec_document
from multimodal.sagemaker.serving import launcher as serve

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


def test_the_code_map_lists_every_subpackage_and_each_says_what_lives_there():
    root = Path(__file__).resolve().parents[1]
    section = README[README.index("### Code map"):]
    listed = set(re.findall(r"^- `(multimodal/[\w/]+/)` — ", section, re.M))
    packages = {f"{p.parent.relative_to(root).as_posix()}/" for p in (root / "multimodal").rglob("__init__.py")
                if p.parent != root / "multimodal"}
    assert listed == packages
    for package in packages:
        doc = ast.get_docstring(ast.parse((root / package / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 20, f"{package}__init__.py needs a docstring saying what lives there"
        assert "import" in doc.lower(), f"{package}__init__.py should say what it may import"
