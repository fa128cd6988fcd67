"""The README's results tables are what `results/tables.py` prints from the JSON in results/<experiment>/."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tables():
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "results" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLES = load_tables()


@pytest.mark.parametrize("experiment", list(TABLES.EXPERIMENTS))
def test_readme_holds_every_table_line_generated_from_the_json(experiment):
    readme = {line.rstrip() for line in (ROOT / "README.md").read_text().splitlines()}
    printed = TABLES.EXPERIMENTS[experiment]().splitlines()
    # markdown rows; the demo's table is console text, every line of it
    generated = [line for line in printed if line.startswith("|")] or [line for line in printed if line]
    assert generated
    assert [line for line in generated if line not in readme] == []


@pytest.mark.parametrize("name, budget", [("tkd-t0.3", "0.3"), ("tkd-t0.3-s43", "0.3"), ("densec-e2", "-"),
                                          ("mpr-t0.18-f1-pfl-ft3-soft1-slr3e-2-exit5e-3-tau0.4", "0.18")])
def test_the_target_column_reads_the_budget_of_a_run_name(name, budget):
    assert TABLES.budget_of(name) == budget
