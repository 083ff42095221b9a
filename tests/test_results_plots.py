import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nbhelpers import plots, results  # noqa: E402


def test_result_rows_carry_provenance_and_keep_their_own_columns(tmp_path):
    df = pd.DataFrame({"model": ["tecoa", "tai"], "accuracy": [0.5, 0.6]})
    path = results.write_table(df, "04_demo", config={"eps": 4}, model="mini-clip", fingerprint="abc",
                               directory=tmp_path)
    back = pd.read_csv(path)
    assert back["model"].tolist() == ["tecoa", "tai"]
    assert set(results.PROVENANCE_COLUMNS) <= set(back.columns)
    assert back["base_model"].unique().tolist() == ["mini-clip"] and back["config"][0] == '{"eps": 4}'
    assert [p.name for p in tmp_path.iterdir()] == ["04_demo.csv"]  # no temporary file left
    with pytest.raises(ValueError, match="provenance column"):
        results.annotate(pd.DataFrame({"config": [1]}), config={}, model="m", fingerprint="f")


def test_save_figure_writes_png_and_pdf_with_checked_names(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = plots.save_figure(fig, "01_demo", directory=tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="NN_lower_case_name"):
        plots.save_figure(fig, "Demo Figure", directory=tmp_path)
