import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nbhelpers import plots, results  # noqa: E402


def test_table_keeps_its_own_columns_and_provenance_goes_once_to_the_meta_file(tmp_path):
    df = pd.DataFrame({"model": ["tecoa", "tai"], "accuracy": [0.5, 0.6], "config": ["a", "b"]})
    path = results.write_table(df, "04_demo", config={"eps": 4}, model="mini-clip", fingerprint="abc",
                               directory=tmp_path)
    back = pd.read_csv(path)
    pd.testing.assert_frame_equal(back, df)  # no provenance column added; a column named 'config' is the table's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["04_demo.csv", "04_demo.meta.json"]  # no temporary file
    meta = json.loads((tmp_path / "04_demo.meta.json").read_text())
    assert meta["config"] == {"eps": 4} and meta["base_model"] == "mini-clip" and meta["model_fingerprint"] == "abc"
    assert {"code_version", "created", "torch"} <= set(meta)
    assert meta["columns"] == ["model", "accuracy", "config"] and meta["rows"] == 2
    table, meta_back = results.read_table("04_demo", directory=tmp_path)
    pd.testing.assert_frame_equal(table, df)
    assert meta_back == meta


def test_read_table_refuses_a_table_replaced_without_its_meta(tmp_path):
    df = pd.DataFrame({"model": ["tecoa", "tai"], "accuracy": [0.5, 0.6]})
    results.write_table(df, "04_demo", config={}, model="m", fingerprint="f", directory=tmp_path)
    df.iloc[:1].to_csv(tmp_path / "04_demo.csv", index=False)
    with pytest.raises(ValueError, match="does not match"):
        results.read_table("04_demo", directory=tmp_path)
    (tmp_path / "04_demo.meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="no metadata"):
        results.read_table("04_demo", directory=tmp_path)


def test_save_figure_writes_png_and_pdf_with_checked_names(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = plots.save_figure(fig, "01_demo", directory=tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="NN_lower_case_name"):
        plots.save_figure(fig, "Demo Figure", directory=tmp_path)
