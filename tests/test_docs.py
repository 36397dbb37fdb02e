"""The docs' tables are made from the results files: every marked table of the README and docs/results.md is what
benchmarks/results_tables.py makes from benchmarks/results/*.json, so a re-measured row cannot leave a
stale table."""
import json
import runpy
import shutil

import pytest

from conftest import ROOT

TABLES = runpy.run_path(str(ROOT / "benchmarks" / "results_tables.py"))


def test_the_tables_of_the_readme_and_docs_results_regenerate_with_no_difference():
    texts = [(ROOT / "README.md").read_text(), (ROOT / "docs" / "results.md").read_text()]
    names = [match["name"] for text in texts for match in TABLES["MARKED"].finditer(text)]
    assert set(names) == set(TABLES["TABLES"]) and len(names) == len(set(names))
    for text in texts:
        assert TABLES["regenerated"](text, ROOT / "benchmarks" / "results") == text


def test_a_changed_result_changes_its_table_and_fails_the_check(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    doc = tmp_path / "results.md"
    shutil.copy(ROOT / "docs" / "results.md", doc)
    throughput = json.loads((results / "train_throughput.json").read_text())
    throughput[-1]["images_per_s"] = 123.456
    (results / "train_throughput.json").write_text(json.dumps(throughput))
    args = TABLES["build_parser"]().parse_args(["--check", "--doc", str(doc), "--results", str(results)])
    assert TABLES["main"](args) == 1 and "tables differ" in capsys.readouterr().err
    assert doc.read_text() == (ROOT / "docs" / "results.md").read_text()  # a check writes nothing
    args.check = False
    assert TABLES["main"](args) == 0
    assert "| (plain) | 123.46 | 1 |" in doc.read_text()
    doc.write_text("<!-- table: no-such-table -->\n| a |\n<!-- end table -->\n")
    with pytest.raises(ValueError, match="table 'no-such-table' is not one of"):
        TABLES["main"](args)
