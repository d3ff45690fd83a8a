import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from phbook import latent, metrics, plotting  # noqa: E402


def scored(seed=0):
    rng = np.random.default_rng(seed)
    classes = np.array(["normal"] * 200 + ["hot_pixel"] * 30 + ["streak"] * 20)
    scores = rng.normal(0, 1, 250) + np.where(classes == "normal", 0.0, 3.0)
    scores[classes == "streak"] -= 2.0  # the streaks are harder
    return scores, classes


def test_compare_puts_detectors_side_by_side():
    s, c = scored()
    table = metrics.compare({"a": s, "b": -s}, c)
    assert list(table.columns) == ["n", "a", "b"]
    assert list(table.index) == ["hot_pixel", "streak", "all"]
    assert table.loc["all", "a"] == pytest.approx(metrics.roc_auc(c != "normal", s))
    assert table.loc["all", "b"] == pytest.approx(1 - table.loc["all", "a"])
    assert table.loc["hot_pixel", "a"] > table.loc["streak", "a"]
    ap = metrics.compare({"a": s}, c, metric="ap")
    assert ap.loc["all", "a"] == pytest.approx(metrics.average_precision(c != "normal", s))
    with pytest.raises(ValueError, match="metric 'roc'"):
        metrics.compare({"a": s}, c, metric="roc")


def test_roc_legend_reports_each_auc_and_accepts_class_names():
    s, c = scored()
    ax = plotting.plot_roc({"good": s, "bad": -s}, c)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    auc = metrics.roc_auc(c != "normal", s)
    assert texts == [f"good (AUC {auc:.3f})", f"bad (AUC {1 - auc:.3f})"]
    assert ax.get_xscale() == "log"
    plt.close("all")


def test_score_histograms_one_per_class():
    s, c = scored()
    ax = plotting.plot_score_hist(s, c, log_x=True)  # negative scores: linear bins
    assert ax.get_xscale() == "linear"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["normal (200)", "hot_pixel (30)", "streak (20)"]
    ax = plotting.plot_score_hist(np.exp(s), c)
    assert ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="250 scores but 3 class names"):
        plotting.plot_score_hist(s, c[:3])
    plt.close("all")


def test_latent_figures():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, (100, 4)), rng.normal(8, 1, (100, 4))])
    sel = latent.select_gmm(z, n_components=(1, 2, 3))
    ax = plotting.plot_bic(sel)
    assert "2 components" in ax.get_legend().get_texts()[0].get_text()
    z3, _ = latent.pca_3d(z)
    ax = plotting.plot_latent_3d(z3, sel.best.predict(z))
    assert len(ax.collections) == 2
    assert ax.get_legend().get_title().get_text() == "mixture component"
    names = np.where(sel.best.predict(z) == 0, "a", "b")
    ax = plotting.plot_latent_3d(z3, names)
    assert ax.get_legend().get_title().get_text() == ""
    with pytest.raises(ValueError, match="z3 must have shape"):
        plotting.plot_latent_3d(z)
    x = rng.normal(0, 1, (200, 8, 8))
    fig = plotting.show_cluster_gallery(
        x, latent.typical_members(sel.best, z, n=4), counts={0: 100, 1: 100}
    )
    assert len(fig.axes) == 2 * 4
    plt.close("all")


def test_reconstruction_figure_has_input_recon_and_residual_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (5, 8, 8))
    fig = plotting.show_reconstructions(x, {"AE": x * 0.9, "PCA": x * 0.5})
    assert len(fig.axes) == 5 * 5
    with pytest.raises(ValueError, match="reconstruction 'AE' has shape"):
        plotting.show_reconstructions(x, {"AE": x[:, :4]})
    ax = plotting.compare_histograms(
        {"training": rng.normal(0, 1, 500), "generated": rng.normal(0.5, 1, 500)}
    )
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "training",
        "generated",
    ]
    plt.close("all")


def test_auc_by_strength_bins_and_plot():
    rng = np.random.default_rng(0)
    classes = np.array(["normal"] * 300 + ["streak"] * 200)
    strength = np.r_[np.full(300, np.nan), rng.uniform(0, 1, 200)]
    # anomalies score like normal frames when faint and far above them when bright
    scores = rng.normal(0, 1, 500) + np.nan_to_num(strength) * 6
    table = metrics.auc_by_strength(scores, classes, strength, bins=(0, 0.1, 0.5, 1))
    assert list(table.index) == ["streak"]
    assert list(table.columns) == [0.05, 0.3, 0.75]
    row = table.loc["streak"].to_numpy()
    assert 0.3 < row[0] < 0.75 and row[2] > 0.99 and row[0] < row[1] < row[2]
    sel = (classes == "normal") | ((strength >= 0.5) & (strength <= 1))
    assert row[2] == pytest.approx(metrics.roc_auc(classes[sel] != "normal", scores[sel]))
    ax = plotting.plot_auc_vs_strength(table)
    assert len(ax.get_lines()) == 2  # the class and the chance line
    with pytest.raises(ValueError, match="increasing edges"):
        metrics.auc_by_strength(scores, classes, strength, bins=(0, 0.5, 0.4))
    plt.close("all")


def test_score_histograms_show_fractions_so_a_class_a_decade_above_stays_visible():
    rng = np.random.default_rng(0)
    s = np.r_[rng.uniform(1, 2, 200), rng.uniform(100, 200, 20)]
    c = np.array(["normal"] * 200 + ["bright_star"] * 20)
    ax = plotting.plot_score_hist(s, c, bins=30)
    assert ax.get_xscale() == "log"
    normal_bars = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
    step = [p for p in ax.patches if type(p).__name__ == "Polygon"]
    assert sum(b.get_height() for b in normal_bars) == pytest.approx(1.0)
    # the far class's outline reaches as high as the normal bars do: a density on
    # logarithmic bins would have divided it by bins a hundred times wider
    top = max(b.get_height() for b in normal_bars)
    assert step[0].get_xy()[:, 1].max() > 0.5 * top
    plt.close("all")
