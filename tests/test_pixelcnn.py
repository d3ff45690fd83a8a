"""PixelCNN: causality, the blind spot, normalised likelihoods, sampling, learning."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from phbook.models import pixelcnn as pc


def _random_model(**kw):
    torch.manual_seed(0)
    model = pc.PixelCNN(**{"channels": 8, "n_layers": 3, "kernel_size": 3, **kw})
    with torch.no_grad():  # larger random weights: every connection carries signal
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.double().eval()


def _outputs(model, x):
    return torch.cat(model(x), dim=-1)  # (N, C, H, W, 3K)


@pytest.mark.parametrize(
    "kw",
    [{}, {"in_channels": 2, "likelihood": "continuous"}, {"kernel_size": 5, "n_layers": 2}],
    ids=["discretized", "two-channels", "kernel5"],
)
def test_changing_pixel_i_never_changes_predictions_before_or_at_i(kw):
    """Perturb each pixel in turn (one image per pixel, in one batch): the predicted
    distribution of every pixel up to and including it must not move."""
    model = _random_model(**kw)
    c, hh, ww = model.in_channels, 6, 7
    g = torch.Generator().manual_seed(1)
    if model.likelihood == "discretized":  # integer ADC counts
        x, step = torch.randint(-20, 400, (1, c, hh, ww), generator=g).double(), 250.0
    else:  # real values of order one (large ones would saturate the gates)
        x, step = torch.randn(1, c, hh, ww, generator=g, dtype=torch.float64), 1.0
    base = _outputs(model, x)[0]  # (C, H, W, 3K)
    p = hh * ww
    batch = x.repeat(p, 1, 1, 1)
    idx = torch.arange(p)
    batch[idx, :, idx // ww, idx % ww] += step  # change pixel i (all channels) in image i
    out = _outputs(model, batch)
    changed = (out - base).abs().amax(dim=(1, 4)).flatten(1) > 0  # (i, j): pixel j moved
    order = torch.arange(p)
    assert not changed[order[:, None] >= order[None, :]].any(), "a pixel saw the future"
    # and the model does look at the past: the next pixel on the row and the one
    # below react
    same_row = order[:-1][order[:-1] % ww != ww - 1]
    assert changed[same_row, same_row + 1].all()
    assert changed[order[:-ww], order[ww:]].all()


def test_gated_pixelcnn_has_no_blind_spot_and_plain_masked_has_one():
    torch.manual_seed(0)
    hh = ww = 12
    r, c, layers = 8, 6, 4
    plain = pc.PlainPixelCNN(channels=8, n_layers=layers, kernel_size=3)
    gated = pc.PixelCNN(channels=8, n_layers=layers, kernel_size=3)
    rf_plain = pc.receptive_field(plain.features, (hh, ww), (r, c))
    rf_gated = pc.receptive_field(gated.features, (hh, ww), (r, c))
    rows, cols = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
    before = (rows < r) | ((rows == r) & (cols < c))
    # what L layers of 3x3 kernels can reach: L rows up, L columns either side
    reach = before & (rows >= r - layers) & ((cols - c).abs() <= layers)
    assert torch.equal(rf_gated, reach)
    assert not (rf_plain & ~before).any()
    blind = reach & ~rf_plain
    assert blind.any() and blind[r - 1, c + 2]  # up and to the right: the blind spot
    with pytest.raises(ValueError, match="outside the image"):
        pc.receptive_field(gated.features, (hh, ww), (hh, 0))


def test_discretized_likelihood_sums_to_one_over_all_integers():
    model = _random_model(value_range=(-40, 3500))
    lo, hi = model.value_range
    values = torch.arange(lo, hi + 1, dtype=torch.float64)
    y_lo, y_hi = model._bins(values)
    g = torch.Generator().manual_seed(0)
    for scale in (-6.0, -3.0, 0.0):  # narrow (many tiny bins) to broad components
        logits = torch.randn(4, generator=g, dtype=torch.float64)
        means = torch.rand(4, generator=g, dtype=torch.float64)
        log_scales = scale + torch.randn(4, generator=g, dtype=torch.float64)
        logp = pc.discretized_logistic_mixture_logp(
            y_lo, y_hi, *(t.expand(len(values), 4) for t in (logits, means, log_scales))
        )
        assert torch.isfinite(logp).all()
        assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-6)


def _reference_log_bin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(sigmoid(b) - sigmoid(a)) in float64 with SciPy's accurate log_expit."""
    upper = a + b > 0
    lo, hi = np.where(upper, -b, a), np.where(upper, -a, b)
    d = special.log_expit(lo) - special.log_expit(hi)
    return special.log_expit(hi) + np.log(-np.expm1(d))


def test_logistic_bin_probability_matches_float64_reference_and_is_stable():
    g = torch.Generator().manual_seed(0)
    a = 30 * torch.randn(4000, generator=g, dtype=torch.float64)
    width = torch.exp(torch.empty(4000, dtype=torch.float64).uniform_(-12, 3, generator=g))
    a, b = a.float(), (a + width).float()
    keep = b > a  # float32 rounding can merge the edges of the narrowest bins
    a, b = a[keep], b[keep]
    got = pc._log_logistic_bin(a, b).double().numpy()
    ref = _reference_log_bin(a.double().numpy(), b.double().numpy())
    assert np.isfinite(got).all() and np.isfinite(ref).all()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    # gradients stay finite in both branches
    af = a.clone().requires_grad_(True)
    pc._log_logistic_bin(af, b).sum().backward()
    assert torch.isfinite(af.grad).all()


def test_continuous_mixture_matches_scipy():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, generator=g, dtype=torch.float64)
    logits = torch.randn(50, 3, generator=g, dtype=torch.float64)
    means = torch.randn(50, 3, generator=g, dtype=torch.float64)
    log_scales = 0.5 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    got = pc.logistic_mixture_logp(y, logits, means, log_scales).numpy()
    w = torch.softmax(logits, -1).numpy()
    pdf = stats.logistic.pdf(
        y.numpy()[:, None], loc=means.numpy(), scale=np.exp(log_scales.numpy())
    )
    np.testing.assert_allclose(got, np.log((w * pdf).sum(1)), rtol=1e-10)


def test_log_prob_is_sum_of_pixel_conditionals_and_bits_per_pixel():
    model = _random_model()
    x = torch.randint(-20, 3000, (3, 1, 5, 5)).double()
    lp = model.log_prob_pixels(x)
    assert lp.shape == (3, 1, 5, 5) and (lp <= 0).all()
    torch.testing.assert_close(model.log_prob(x), lp.flatten(1).sum(1))
    torch.testing.assert_close(
        model.bits_per_pixel(x), -lp.flatten(1).sum(1) / 25 / math.log(2)
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="likelihood"):
        pc.PixelCNN(likelihood="poisson")
    with pytest.raises(ValueError, match="kernel_size"):
        pc.PixelCNN(kernel_size=4)
    with pytest.raises(ValueError, match="value_range"):
        pc.PixelCNN(value_range=(10, 10))
    with pytest.raises(ValueError, match="x must be images"):
        pc.PixelCNN().log_prob(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="mask_type"):
        pc.MaskedConv2d(1, 1, 3, "C")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        pc.PixelCNN().sample(0)


def test_learns_a_known_distribution_and_samples_it():
    """Pixels i.i.d.: 0 or 200 ADC with probability 1/2, plus rounded Gaussian noise of
    8 ADC. Its entropy is 1 + log2(2 pi e 64) / 2 = 6.05 bits per pixel: the exact
    likelihood of held-out images must approach it from above (never below), and
    samples must reproduce the two values and their odds."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def draw(n):
        two = 200.0 * torch.randint(0, 2, (n, 1, 6, 6), generator=g).float()
        return two + (8 * torch.randn(n, 1, 6, 6, generator=g)).round()

    x, x_test = draw(512), draw(256)
    model = pc.PixelCNN(channels=8, n_layers=2, kernel_size=3, n_mixtures=2, image_size=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        model.loss(x[torch.randint(0, 512, (64,), generator=g)])["loss"].backward()
        opt.step()
    with torch.no_grad():
        bpp = float(model.bits_per_pixel(x_test).mean())
    entropy = 1 + 0.5 * math.log2(2 * math.pi * math.e * 64)
    assert entropy - 0.05 < bpp < entropy + 0.8
    samples = model.sample(64, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (64, 1, 6, 6) and torch.equal(samples, samples.round())
    near0 = float((samples.abs() < 40).float().mean())
    near200 = float(((samples - 200).abs() < 40).float().mean())
    assert near0 + near200 > 0.85 and 0.3 < near0 < 0.7


def test_continuous_likelihood_on_floats_any_size():
    model = _random_model(likelihood="continuous", image_size=(9, 11)).float()
    x = torch.randn(2, 1, 9, 11)
    assert torch.isfinite(model.log_prob(x)).all()
    s = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 1, 9, 11) and not torch.equal(s, s.round())


def test_independent_pixels_ignore_each_other_and_check_the_size():
    torch.manual_seed(0)
    model = pc.IndependentPixels(image_size=(4, 5)).double()
    x = torch.randint(-20, 400, (1, 1, 4, 5)).double()
    batch = x.repeat(20, 1, 1, 1)
    idx = torch.arange(20)
    batch[idx, 0, idx // 5, idx % 5] += 100.0
    lp = model.log_prob_pixels(batch)[:, 0].flatten(1)  # (changed pixel, pixel)
    base = model.log_prob_pixels(x)[0, 0].flatten()
    moved = (lp - base).abs() > 0
    assert torch.equal(moved, torch.eye(20, dtype=torch.bool))
    with pytest.raises(ValueError, match="images of size"):
        model.log_prob(torch.zeros(1, 1, 5, 5, dtype=torch.float64))


# ------------------------------------------------------------------- the detector


def _frames(n, seed=0, bright=False):
    """Integer frames: noise around 10 ADC with a bright blob (normal), or without."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    x = rng.normal(10, 8, (n, 8, 8))
    if not bright:
        cy, cx = rng.uniform(2, 6, (2, n, 1, 1))
        x += 300 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
    return np.round(x).astype(np.int16)


def test_pixelcnn_detector_scores_and_corrections(tmp_path, monkeypatch):
    from phbook import detectors

    monkeypatch.setenv("PHBOOK_DATA", str(tmp_path))
    kw = dict(
        model_kwargs={"channels": 8, "n_layers": 2, "kernel_size": 3, "n_mixtures": 2},
        fit_kwargs={"epochs": 3, "batch_size": 64, "lr": 5e-3},
        background_fit_kwargs={"epochs": 3},
        name="test-pcnn",
        device="cpu",
    )
    det = detectors.PixelCNNDetector(corrected="combined", **kw).fit(_frames(400))
    x_test = np.concatenate([_frames(50, seed=1), _frames(50, seed=2, bright=True)])
    parts = det.score_parts(x_test)
    assert set(parts) == {
        "bits_per_pixel",
        "background_bits_per_pixel",
        "ratio",
        "combined",
    }
    assert all(np.isfinite(v).all() and v.shape == (100,) for v in parts.values())
    np.testing.assert_allclose(
        parts["ratio"], parts["bits_per_pixel"] - parts["background_bits_per_pixel"]
    )
    np.testing.assert_allclose(det.anomaly_score(x_test), parts["combined"])
    # combined = Fisher's method over empirical p-values among held-out normal frames
    fisher = np.zeros(100)
    for key in ("bits_per_pixel", "ratio"):
        ref = det.reference_[key]
        p = np.array([(np.sum(ref >= s) + 1) / (len(ref) + 1) for s in parts[key]])
        fisher -= np.log(p)
    np.testing.assert_allclose(parts["combined"], fisher)
    assert len(det.reference_["ratio"]) == 40  # the held-out tenth of 400 frames
    np.testing.assert_allclose(
        det.log_prob(x_test), -parts["bits_per_pixel"] * 64 * math.log(2), rtol=1e-5
    )
    # the checkpoints are reused: the raw detector loads the same PixelCNN
    raw = detectors.PixelCNNDetector(corrected=False, **kw).fit(_frames(400))
    np.testing.assert_allclose(
        raw.anomaly_score(x_test), parts["bits_per_pixel"], rtol=1e-6
    )
    # pure-noise frames (no shower) are *simpler*: more probable under the raw model
    labels = np.r_[np.zeros(50), np.ones(50)]
    from phbook import metrics

    assert metrics.roc_auc(labels, parts["bits_per_pixel"]) < 0.5


def test_pixelcnn_detector_rejects_bad_input():
    from phbook import detectors

    with pytest.raises(ValueError, match="integer values"):
        detectors.PixelCNNDetector().fit(np.random.rand(20, 8, 8))
    with pytest.raises(ValueError, match="corrected="):
        detectors.PixelCNNDetector(corrected="yes").fit(_frames(20))


def test_pixelcnn_detector_on_continuous_images_of_another_size():
    """Chapter 12's use: real-valued stamps of any size (here 12 x 10, one channel)."""
    from phbook import detectors

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (120, 12, 10)).astype(np.float32)
    det = detectors.PixelCNNDetector(
        model_kwargs={
            "channels": 8,
            "n_layers": 2,
            "kernel_size": 3,
            "likelihood": "continuous",
        },
        fit_kwargs={"epochs": 1, "batch_size": 60},
        background_fit_kwargs={"epochs": 2},
        corrected="ratio",
        device="cpu",
    ).fit(x)
    scores = det.anomaly_score(x[:5])
    assert scores.shape == (5,) and np.isfinite(scores).all()
    assert det.model_.likelihood == det.background_.likelihood == "continuous"


def test_detector_initial_weights_do_not_depend_on_earlier_random_draws():
    from phbook import detectors

    kw = dict(
        model_kwargs={"channels": 4, "n_layers": 1, "kernel_size": 3},
        fit_kwargs={"epochs": 1, "batch_size": 40},
        background_fit_kwargs={"epochs": 1},
        device="cpu",
    )
    x = _frames(80)
    a = detectors.PixelCNNDetector(**kw).fit(x).anomaly_score(x[:5])
    torch.rand(1000)  # something else uses the global generator in between
    b = detectors.PixelCNNDetector(**kw).fit(x).anomaly_score(x[:5])
    np.testing.assert_array_equal(a, b)
    c = detectors.PixelCNNDetector(seed=1, **kw).fit(x).anomaly_score(x[:5])
    assert not np.array_equal(a, c)
