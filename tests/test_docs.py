"""The docs' tables are made from the results files: a table in docs/results.md that its script prints
from benchmarks/results/*.json must be there as printed, so a re-measured row cannot leave a stale table."""
import json
import runpy

from conftest import ROOT

TABLES = runpy.run_path(str(ROOT / "benchmarks" / "scorecard_table.py"))


def test_the_scorecard_tables_in_the_docs_are_the_ones_the_results_make():
    rows = json.loads((ROOT / "benchmarks" / "results" / "fidelity.json").read_text())
    docs = (ROOT / "docs" / "results.md").read_text()
    for table in (TABLES["scorecard_table"](rows), TABLES["refloored_table"](rows)):
        assert table in docs, table.splitlines()[2]
