import numpy as np
import pytest
import torch
from torch import nn

from phbook import detectors, metrics, train
from phbook.models.ae import ChaseSCAE, ConvDecoder, ConvEncoder, SparseConvAE


def blobs(n=600, size=16, seed=0):
    """Normal images: a Gaussian blob at a random place in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    amp = rng.uniform(0.5, 1.5, (n, 1, 1))
    x = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


def with_hot_pixels(x, seed=2):
    rng = np.random.default_rng(seed)
    out = x.copy()
    n, h, w = x.shape
    out[np.arange(n), rng.integers(0, h, n), rng.integers(0, w, n)] += 3.0
    return out


@pytest.mark.parametrize("size", [16, 21, 64, (21, 16)])
def test_shapes_of_every_image_size(size):
    model = SparseConvAE(size, latent_dim=21)
    hw = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, 1, *hw)
    z = model.encode(x)
    assert z.shape == (3, 21)
    assert model.decode(z).shape == (3, 1, *hw)
    assert model(x[:, 0]).shape == (3, 1, *hw)  # (N, H, W) is accepted
    with pytest.raises(ValueError, match=r"x must be single-channel images"):
        model(torch.randn(3, 2, *hw))


def test_odd_sizes_are_padded_evenly_and_cropped():
    enc = ConvEncoder(21, channels=(8, 8))
    assert enc.pad == (1, 2, 1, 2)  # 21 -> 24, the total stride being 4
    assert enc.feature_shape == (8, 6, 6)
    dec = ConvDecoder(21, channels=(8, 8))
    assert dec(torch.zeros(2, enc.n_features)).shape == (2, 1, 21, 21)


def test_architecture_follows_the_paper():
    """Huijse et al. (2018): three 3x3 stride-2 convolutions of 32 filters with ReLU, a
    linear latent layer of 21 units with L1 0.005 on its weights, a mirrored decoder
    with nearest-neighbour upsampling and ReLU, a linear output, NAdam."""
    torch.manual_seed(0)
    model = ChaseSCAE()
    assert model.image_hw == (21, 21) and model.latent_dim == 21 and model.l1 == 0.005
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert all(
        c.kernel_size == (3, 3) and c.stride == (2, 2) and c.out_channels == 32
        for c in convs
    )
    assert sum(isinstance(m, nn.ReLU) for m in model.encoder.body) == 3
    assert model.to_latent.out_features == 21
    # the decoder: three nearest-neighbour upsamplings, each followed by a 3x3
    # convolution; ReLU after every stage but the last
    ups = [m for m in model.decoder.body if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "nearest" for u in ups)
    dconvs = [m for m in model.decoder.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in dconvs] == [32, 32, 1]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in dconvs)
    assert isinstance(model.decoder.body[-1], nn.Conv2d)
    assert sum(isinstance(m, nn.ReLU) for m in model.decoder.body) == 2
    assert isinstance(model.configure_optimizers(1e-3, 0.0), torch.optim.NAdam)
    # the latent and output layers are linear: they can take negative values
    x = torch.randn(64, 1, 21, 21)
    assert (model.encode(x) < 0).any()
    with torch.no_grad():
        model.decoder.body[-1].bias.fill_(-1.0)
    assert (model(x) < 0).any()
    # the layer after the latent is followed by a ReLU: the decoder's input is >= 0
    h = torch.relu(model.from_latent(model.encode(x)))
    assert (h >= 0).all()
    assert model(x).shape == x.shape


def test_loss_is_mse_plus_l1_on_the_latent_weights():
    torch.manual_seed(0)
    model = SparseConvAE(16, l1=0.005)
    x = torch.from_numpy(blobs(16))
    terms = model.loss(x)
    torch.testing.assert_close(terms["mse"], nn.functional.mse_loss(model(x), x[:, None]))
    torch.testing.assert_close(terms["l1"], 0.005 * model.to_latent.weight.abs().sum())
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["l1"])
    with torch.no_grad():
        model.to_latent.weight.fill_(-0.5)
    expected = 0.005 * 0.5 * model.to_latent.weight.numel()
    assert model.loss(x)["l1"].item() == pytest.approx(expected, rel=1e-6)


def test_l1_makes_the_latent_weights_sparser():
    x = blobs(512)
    sparsity = {}
    for l1 in (0.0, 0.005):
        torch.manual_seed(0)
        model = SparseConvAE(16, latent_dim=8, channels=(8, 8), l1=l1)
        train.fit(model, x, epochs=4, batch_size=64, lr=3e-3, progress=False, device="cpu")
        w = model.to_latent.weight.detach().abs()
        sparsity[l1] = float((w < 1e-2).float().mean())
    assert sparsity[0.005] > sparsity[0.0] + 0.2


def test_autoencoder_detector_trains_checkpoints_and_reloads(tmp_path):
    x = blobs(512)
    kwargs = dict(
        model_kwargs={"latent_dim": 8, "channels": (8, 8)},
        fit_kwargs={"epochs": 3, "batch_size": 64, "lr": 3e-3, "progress": False},
        device="cpu",
    )
    det = detectors.AutoencoderDetector(name="test_ae", **kwargs).fit(x)
    path = train.checkpoint_path("test_ae")
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    again = detectors.AutoencoderDetector(name="test_ae", **kwargs).fit(x)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    test = blobs(100, seed=1)
    np.testing.assert_allclose(
        again.anomaly_score(test), det.anomaly_score(test), rtol=1e-5
    )
    scores = det.anomaly_score(np.concatenate([test, with_hot_pixels(test)]))
    assert metrics.roc_auc(np.r_[np.zeros(100), np.ones(100)], scores) > 0.9
    # the two reconstruction scores, by hand from the reconstructions
    residual2 = ((test[:, None] - det.reconstruct(test)) ** 2).reshape(100, -1)
    np.testing.assert_allclose(det.anomaly_score(test), residual2.mean(1), rtol=1e-5)
    peak = detectors.AutoencoderDetector(det.model_, train=False, score="recon_max").fit(x)
    np.testing.assert_allclose(peak.anomaly_score(test), residual2.max(1), rtol=1e-5)


def test_the_model_argument_is_not_trained_in_place():
    x = blobs(128)
    model = SparseConvAE(16, latent_dim=4, channels=(4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    det = detectors.AutoencoderDetector(
        model,
        fit_kwargs={"epochs": 1, "batch_size": 64, "progress": False},
        device="cpu",
    ).fit(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(det.model_.to_latent.weight.cpu(), before["to_latent.weight"])


def test_detector_on_21x21_stamps_and_latent_scores():
    x = blobs(256, size=21)
    det = detectors.AutoencoderDetector(
        model_kwargs={"latent_dim": 21, "channels": (8, 8)},
        fit_kwargs={"epochs": 2, "batch_size": 64, "progress": False},
        score="latent_dist",
        gmm_components=(1, 2),
        device="cpu",
    ).fit(x)
    assert det.transform(x[:5]).shape == (5, 21)
    assert det.reconstruct(x[:5]).shape == (5, 1, 21, 21)
    assert det.anomaly_score(x[:5]).shape == (5,)
    assert det.gmm_.n_components in (1, 2)
    with pytest.raises(ValueError, match=r"shape \(1, 21, 21\)"):
        det.anomaly_score(blobs(5))


def test_deep_detector_errors_name_the_argument():
    x = blobs(64)
    with pytest.raises(ValueError, match="score='elbo' is not a score"):
        detectors.AutoencoderDetector(score="elbo").fit(x)
    with pytest.raises(ValueError, match="train=False needs a trained model"):
        detectors.AutoencoderDetector(train=False).fit(x)
    with pytest.raises(ValueError, match="single-channel"):
        detectors.AutoencoderDetector().fit(np.zeros((8, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="latent_dim"):
        SparseConvAE(16, latent_dim=0)


def test_incremental_pca_matches_pca_and_dictionary_learning_is_sparse():
    # images of rank 8 plus faint noise: both fits must find the same 8-d subspace
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((8, 256))
    low_rank = (rng.standard_normal((700, 8)) * np.arange(8, 0, -1)) @ basis
    x = (low_rank + 0.01 * rng.standard_normal((700, 256))).reshape(700, 16, 16)
    train_x, test_x = x[:600].astype(np.float32), x[600:].astype(np.float32)
    test_x[:50] += 0.5 * rng.standard_normal((50, 16, 16)).astype(np.float32)
    pca = detectors.PCAReconstruction(n_components=8).fit(train_x)
    ipca = detectors.IncrementalPCADetector(n_components=8, batch_size=100).fit(train_x)
    # the incremental fit over six mini-batches finds the same subspace
    np.testing.assert_allclose(
        ipca.anomaly_score(test_x), pca.anomaly_score(test_x), rtol=1e-3
    )
    assert ipca.transform(test_x).shape == (100, 8)
    x = blobs(600)
    test = blobs(50, seed=1)
    dl = detectors.DictionaryLearningDetector(
        n_components=16, n_nonzero=4, alpha=1.0, max_iter=2
    ).fit(x)
    codes = dl.transform(test)
    assert codes.shape == (50, 16)
    assert ((codes != 0).sum(1) <= 4).all()
    scores = dl.anomaly_score(np.concatenate([test, with_hot_pixels(test)]))
    assert metrics.roc_auc(np.r_[np.zeros(50), np.ones(50)], scores) > 0.9
    with pytest.raises(ValueError, match="n_nonzero"):
        detectors.DictionaryLearningDetector(n_components=4, n_nonzero=5).fit(x)
    with pytest.raises(ValueError, match="batch_size"):
        detectors.IncrementalPCADetector(n_components=32, batch_size=16).fit(x)


def test_batched_returns_vectors_and_scalars():
    x = np.zeros((10, 1, 4, 4), np.float32)
    assert detectors.batched(
        lambda t: t.flatten(1)[:, :3], x, batch_size=3, device="cpu"
    ).shape == (10, 3)
    assert detectors.batched(
        lambda t: t.flatten(1).sum(1), x, batch_size=3, device="cpu"
    ).shape == (10,)


@pytest.mark.parametrize("upsample", ["nearest", "transpose", "shuffle"])
def test_every_upsampling_gives_the_image_size(upsample):
    for size in (16, 21, (21, 16)):
        dec = ConvDecoder(size, channels=(4, 8), upsample=upsample)
        hw = (size, size) if isinstance(size, int) else size
        assert dec(torch.zeros(3, dec.n_features)).shape == (3, 1, *hw)
    with pytest.raises(ValueError, match="upsample must be one of"):
        ConvDecoder(16, upsample="bilinear")
