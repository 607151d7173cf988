"""reports.readme_tables: README.md's measured block is what the committed records say."""

from reports import readme_tables


def test_readme_block_is_generated_from_the_committed_records():
    text = readme_tables.README.read_text(encoding="utf-8")
    assert readme_tables.readme_block(text) == readme_tables.block(), (
        "README.md's measured block differs from the committed records: run python -m reports.readme_tables --write"
    )
    assert readme_tables.main(["--check"]) == 0


def test_the_table_quotes_every_preset_and_mode_with_every_column():
    table = readme_tables.table().splitlines()
    rows = [(row.split(" | ")[0].lstrip("| "), row.split(" | ")[2]) for row in table[2:]]
    eager = [p for p, mode in rows if mode == "eager"]
    assert eager == list(readme_tables.PRESETS)  # every preset once, eager
    graph = [p for p, mode in rows if mode == "graph"]
    assert graph == list(readme_tables.PRESETS)  # and every preset's CUDA-graph replay
    assert all(row.count("|") == table[0].count("|") for row in table)


def test_check_fails_on_a_stale_block(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    block = readme_tables.block()
    row = readme_tables.table().splitlines()[2]
    stale.write_text(block.replace(row, row.replace(" ms |", "1 ms |", 1)), encoding="utf-8")
    monkeypatch.setattr(readme_tables, "README", stale)
    assert readme_tables.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert readme_tables.main(["--write"]) == 0
    assert readme_tables.main(["--check"]) == 0
