"""The image flow: layer log-determinants against autograd, invertibility, learning."""

import math

import pytest
import torch

from phbook.models import realnvp as rn


def _perturb(module, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _jacobian_logdet(fn, x):
    """log|det| of the Jacobian of ``fn`` (one image -> flat output) at each image."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None]).reshape(-1), xi)
        out.append(torch.linalg.slogdet(jac.reshape(jac.shape[0], -1))[1])
    return torch.stack(out)


LAYERS = {
    "actnorm": lambda: rn.ActNorm(2),
    "conv1x1": lambda: rn.Invertible1x1Conv(4),
    "checker0": lambda: rn.AffineCoupling(2, hidden=8, mask="checkerboard", parity=0),
    "checker1": lambda: rn.AffineCoupling(2, hidden=8, mask="checkerboard", parity=1),
    "channel0": lambda: rn.AffineCoupling(4, hidden=8, mask="channel", parity=0),
    "channel1": lambda: rn.AffineCoupling(3, hidden=8, mask="channel", parity=1),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_logdet_matches_autograd_and_inverse_inverts(name):
    torch.manual_seed(0)
    layer = _perturb(LAYERS[name]()).double().eval()
    c = (
        2
        if name in ("actnorm", "checker0", "checker1")
        else (3 if name == "channel1" else 4)
    )
    x = torch.randn(3, c, 4, 4, dtype=torch.float64)
    y, logdet = layer(x)
    assert (y - x).abs().max() > 1e-2 and logdet.abs().max() > 1e-3  # not the identity
    torch.testing.assert_close(logdet, _jacobian_logdet(lambda v: layer(v)[0], x))
    torch.testing.assert_close(layer.inverse(y), x)


def test_squeeze_is_a_permutation_and_unsqueeze_undoes_it():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    s = rn.squeeze(x)
    assert s.shape == (2, 12, 2, 3)
    assert torch.equal(torch.sort(s.flatten())[0], torch.sort(x.flatten())[0])
    assert torch.equal(rn.unsqueeze(s), x)
    # the 2 x 2 block at the top left becomes the 4 channels of the first position
    assert s[0, :4, 0, 0].tolist() == [
        x[0, 0, 0, 0],
        x[0, 0, 0, 1],
        x[0, 0, 1, 0],
        x[0, 0, 1, 1],
    ]
    with pytest.raises(ValueError, match="even height and width"):
        rn.squeeze(torch.zeros(1, 1, 3, 4))


def test_actnorm_initialises_from_the_first_batch():
    layer = rn.ActNorm(3)
    x = 5 + 3 * torch.randn(64, 3, 4, 4)
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def _small_flow():
    torch.manual_seed(0)
    flow = rn.RealNVP(hidden=8, n_checker=2, n_steps=2, image_size=4)
    flow.train()
    flow.log_density(torch.randn(16, 1, 4, 4) * 30)  # initialise the actnorms
    return _perturb(flow, 0.2).double().eval()


def test_whole_flow_density_matches_change_of_variables_by_autograd():
    flow = _small_flow()
    v = 40 * torch.randn(3, 1, 4, 4, dtype=torch.float64)

    def to_code(x):
        y, _ = flow.stretch(x)
        z_split, z_out, _ = flow.flow(y)
        return torch.cat([z_split.flatten(1), z_out.flatten(1)], 1)

    z = to_code(v)
    prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    expected = prior + _jacobian_logdet(to_code, v)
    torch.testing.assert_close(flow.log_density(v), expected)


def test_flow_inverse_recovers_the_image():
    flow = _small_flow()
    y = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    z_split, z_out, _ = flow.flow(y)
    torch.testing.assert_close(flow.inverse(z_split, z_out), y)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="divisible by 4"):
        rn.RealNVP(image_size=18)
    with pytest.raises(ValueError, match="x must be images of shape"):
        rn.RealNVP().log_prob(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="n_samples"):
        rn.RealNVP().log_prob(torch.zeros(2, 1, 16, 16), n_samples=0)
    with pytest.raises(ValueError, match="mask"):
        rn.AffineCoupling(2, mask="stripes")


def test_learns_integer_noise_and_samples_integers():
    """Integer Gaussian noise of 8 ADC, i.i.d.: the dequantised bound must approach the
    entropy of the discretised Gaussian (5.05 bits per pixel) from above."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (20 + 8 * torch.randn(512, 1, 8, 8, generator=g)).round()
    x_test = (20 + 8 * torch.randn(256, 1, 8, 8, generator=g)).round()
    flow = rn.RealNVP(hidden=8, n_checker=2, n_steps=1, image_size=8)
    opt = torch.optim.Adam(flow.parameters(), lr=2e-2)
    for _ in range(60):
        opt.zero_grad()
        flow.loss(x[torch.randint(0, 512, (64,), generator=g)])["loss"].backward()
        opt.step()
    flow.eval()
    with torch.no_grad():
        bpp = float(flow.bits_per_pixel(x_test, n_samples=4).mean())
    entropy = 0.5 * math.log2(2 * math.pi * math.e * 64)
    assert entropy - 0.05 < bpp < entropy + 0.5
    s = flow.sample(200, generator=torch.Generator().manual_seed(1))
    assert s.shape == (200, 1, 8, 8) and torch.equal(s, s.round())
    assert abs(float(s.mean()) - 20) < 3 and abs(float(s.std()) - 8) < 2


def test_image_flow_detector(tmp_path, monkeypatch):
    import numpy as np

    from phbook import detectors

    monkeypatch.setenv("PHBOOK_DATA", str(tmp_path))
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(10, 8, (300, 8, 8))).astype(np.int16)
    odd = x[:20].copy()
    odd[:, 4, 4] += 600  # a hot pixel
    det = detectors.ImageFlowDetector(
        model_kwargs={"hidden": 8, "n_checker": 2, "n_steps": 1},
        fit_kwargs={"epochs": 4, "batch_size": 50, "lr": 1e-2},
        name="test-flow",
        device="cpu",
    ).fit(x)
    s_norm, s_odd = det.anomaly_score(x[:20]), det.anomaly_score(odd)
    assert np.isfinite(s_norm).all() and (s_odd > s_norm).all()
    np.testing.assert_array_equal(det.anomaly_score(odd), s_odd)  # seeded: repeatable
    with pytest.raises(ValueError, match="integer values"):
        det.anomaly_score(x[:3] + 0.5)
