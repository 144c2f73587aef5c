"""benchmarks/RESULTS.md: every figure comes from a result file, and the file is regenerated from them."""

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import record  # noqa: E402

# a number, but not digits inside a name such as float32 or CIFAR-10
NUMBER = re.compile(r"(?<![A-Za-z_\d])(?<![A-Za-z]-)\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


def held(result: dict) -> set[tuple]:
    """(decimals, value) pairs a line may state: every number in the JSON rounded to 0-4 decimals, as
    is, as a percentage and in minutes, every list's length, and every number written in its strings."""
    values, found = [], set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            values.append(len(x))  # a count of its items, e.g. "4 of 6 C fitted" of a 6-value C grid
            for v in x:
                walk(v)
        elif isinstance(x, bool) or x is None:
            pass
        elif isinstance(x, int | float):
            values.append(abs(float(x)))
        elif isinstance(x, str):
            values.extend(float(t.replace(",", "")) for t in NUMBER.findall(x))

    walk({k: v for k, v in result.items() if k not in ("lines", "notes")})
    for x in values:
        for scaled in (x, 100 * x, x / 60):
            for d in range(5):
                found.add((d, round(scaled, d)))
        found |= {("g", float(f"{x:.{s}g}")) for s in (1, 2, 3)}  # scientific notation, e.g. p = 5.5e-05
    return found


def unheld(text: str, result: dict) -> list[str]:
    have = held(result)
    out = []
    for token in NUMBER.findall(text):
        value = float(token.replace(",", ""))
        if "e" in token:
            key = ("g", value)
        else:
            decimals = len(token.split(".")[1]) if "." in token else 0
            key = (decimals, round(value, decimals))
        if key not in have:
            out.append(token)
    return out


RESULTS = sorted((BENCH / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_figure_of_a_result_is_in_its_json(path):
    result = json.loads(path.read_text())
    assert result["lines"], path.name  # a result states something
    assert re.search(rf"-{record.stamp(result['date'])}(-\d+)?\.json$", path.name)  # stamped by its own date
    text = "\n".join(result["lines"] + result.get("notes", []))
    assert unheld(text, result) == [], path.name


def test_the_check_catches_a_number_no_json_holds():
    result = {"date": "2026-11-29T00:00:00+00:00", "error": 0.19106, "seconds": 408.0}
    assert unheld("error 19.11%, 0.19, 6.8 min, 1.9e-01, 408", result) == []
    text = "float32 on CIFAR-10: error 19.12%, about 500 img/s, 1,000, 3.0e-01"
    assert unheld(text, result) == ["19.12", "500", "1,000", "3.0e-01"]
    grid = {"C_grid": [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0], "C_tried": 4}
    assert unheld("4 of 6 C fitted", grid) == [] and unheld("4 of 7 C fitted", grid) == ["7"]


def test_results_md_is_regenerated_from_the_result_files():
    assert (BENCH / "RESULTS.md").read_text() == record.render(BENCH)


def test_a_result_file_is_never_overwritten(tmp_path):
    (tmp_path / "RESULTS.md").write_text("")
    out = {"command": "python benchmarks/x.py", "machine": "m", "date": "2026-11-29T01:02:03+00:00", "n": 7}
    path = record.save("x", out, ["  n 7"], root=tmp_path)
    assert path.name == "x-20261129T010203Z.json"
    same_second = record.save("x", {**out, "n": 8}, ["  n 8"], root=tmp_path)  # a second run, same stamp
    assert same_second.name == "x-20261129T010203Z-2.json" and json.loads(same_second.read_text())["n"] == 8
    assert json.loads(path.read_text())["n"] == 7
    later = record.save("x", {**out, "date": "2026-11-30T01:02:03+00:00", "n": 9}, ["  n 9"], root=tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert later != path and text.index("  n 7") < text.index("  n 9")
    assert "## X (`benchmarks/x.py`)" in text


def test_result_files_hold_arrays_of_numbers_on_one_line():
    out = {"errors": [0, 1, 1], "x": [0.5, -3e-05, 1e+20], "names": ["a", "b"], "nested": [[1, 2], [3]],
           "empty": [], "text": "[1,\n 2]", "spaced": "[1,2]", "rows": [{"errors": [1, 0]}]}
    text = record.dumps(out)
    assert json.loads(text) == out
    assert '"errors": [0, 1, 1]' in text and '"x": [0.5, -3e-05, 1e+20]' in text
    assert '"errors": [1, 0]' in text  # inside a list of objects too
    assert '"names": [\n' in text  # strings keep one per line
