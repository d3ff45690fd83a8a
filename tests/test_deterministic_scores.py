"""A frame's score depends on the frame and the model alone: never on the chunk, the
batch, the order or the neighbours it is scored with (issue 17)."""

import numpy as np
import pytest
import torch

from phbook import detectors, noise, transforms


def _frames(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(n, 16, 16)).astype(np.float32)
    x[::7, 4:8, 4:8] += rng.poisson(40.0, size=(len(x[::7]), 4, 4))
    return x


def _in_chunks(det, x, chunk):
    return np.concatenate(
        [det.anomaly_score(x[a : a + chunk]) for a in range(0, len(x), chunk)]
    )


def test_frame_noise_belongs_to_the_frame():
    x = torch.as_tensor(_frames(50))
    z = noise.frame_normal(x, (4, 8), seed=3)
    assert z.shape == (50, 4, 8)
    # the same frame gets the same draws whatever its neighbours
    assert torch.equal(noise.frame_normal(x[10:13], (4, 8), seed=3), z[10:13])
    assert torch.equal(noise.frame_normal(x.flip(0), (4, 8), seed=3), z.flip(0))
    # another seed or another frame gets other draws
    assert not torch.equal(noise.frame_normal(x, (4, 8), seed=4), z)
    y = x.clone()
    y[0, 0, 0] += 1
    assert not torch.equal(noise.frame_normal(y[:1], (4, 8), seed=3), z[:1])
    u = noise.frame_uniform(x, (1000,), seed=0)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    big = noise.frame_normal(x, (2000,), seed=0).double()
    assert abs(float(big.mean())) < 0.02 and abs(float(big.std()) - 1) < 0.02


def _vae_elbo():
    return detectors.Transformed(
        detectors.VAEDetector(
            model_kwargs={"latent_dim": 8},
            fit_kwargs={"epochs": 1, "batch_size": 64, "seed": 0},
            score="elbo",
            n_samples=4,
            batch_size=100,
        ),
        transforms.AsinhStretch(),
    )


def _flow_vae():
    return detectors.Transformed(
        detectors.FlowVAEDetector(
            n_flows=2,
            n_samples=4,
            model_kwargs={"latent_dim": 8},
            fit_kwargs={"epochs": 1, "batch_size": 64, "seed": 0},
            batch_size=100,
        ),
        transforms.AsinhStretch(),
    )


def _ae_max():
    return detectors.Transformed(
        detectors.AutoencoderDetector(
            model_kwargs={"latent_dim": 8},
            fit_kwargs={"epochs": 1, "batch_size": 64, "seed": 0},
            score="recon_max",
            batch_size=100,
        ),
        transforms.AsinhStretch(),
    )


@pytest.mark.parametrize("build", [_vae_elbo, _flow_vae, _ae_max])
def test_scores_do_not_depend_on_chunk_batch_or_order(build):
    torch.manual_seed(0)
    x = _frames()
    det = build().fit(x)
    ref = det.anomaly_score(x)
    assert np.isfinite(ref).all()
    for chunk in (1, 7, 128, 300):
        assert np.array_equal(_in_chunks(det, x, chunk), ref), f"chunk {chunk}"
    perm = np.random.default_rng(1).permutation(len(x))
    assert np.array_equal(det.anomaly_score(x[perm]), ref[perm])
    # another scoring batch size: the same bits
    inner = det.detector_
    inner.batch_size = 1000
    assert np.array_equal(det.anomaly_score(x), ref)
    # and repeated calls agree (no generator state carried between calls)
    assert np.array_equal(det.anomaly_score(x), ref)


def test_monte_carlo_scores_change_with_the_seed():
    torch.manual_seed(0)
    x = _frames(100)
    det = _vae_elbo().fit(x)
    a = det.anomaly_score(x)
    det.detector_.seed = 1
    b = det.anomaly_score(x)
    assert not np.array_equal(a, b)
    # but only as Monte Carlo noise: the same scale
    assert 0.8 < np.median(a) / np.median(b) < 1.25


def test_dequantised_flow_scores_are_chunk_invariant():
    torch.manual_seed(0)
    x = np.random.default_rng(0).poisson(3.0, size=(120, 8, 8)).astype(np.float32)
    det = detectors.ImageFlowDetector(
        model_kwargs={"hidden": 8, "n_checker": 2, "n_steps": 1},
        fit_kwargs={"epochs": 1, "batch_size": 32},
        n_samples=2,
        batch_size=50,
    ).fit(x)
    ref = det.anomaly_score(x)
    assert np.array_equal(_in_chunks(det, x, 13), ref)
    assert np.array_equal(det.anomaly_score(x[::-1]), ref[::-1])


# ------------------------------------------------------- through phbook score


@pytest.fixture(scope="module")
def vae_model(tmp_path_factory):
    """A small archive and a beta-VAE model file scored by its ELBO (Monte Carlo)."""
    from scale_helpers import make_archive

    from phbook import cli

    folder = tmp_path_factory.mktemp("det")
    arch = make_archive(folder / "archive", 1500, seed=8)
    sel, model = folder / "sel.h5", folder / "vae.pt"
    assert cli.main(["select", str(arch.root), "-n", "600", "-o", str(sel), "-q"]) == 0
    args = ["train", str(sel), "--model", "beta-vae", "--latent-dim", "4"]
    args += ["--epochs", "1", "--score", "elbo", "--n-samples", "4"]
    assert cli.main([*args, "-o", str(model), "-q"]) == 0
    return arch, model


def test_phbook_score_is_the_same_for_any_chunk_and_worker_count(vae_model, tmp_path):
    from phbook import score
    from phbook.score import distributed

    arch, model = vae_model
    runs = {}
    for chunk in (37, 1000):
        out = tmp_path / f"c{chunk}.h5"
        score.score(model, arch.root, out, chunk_frames=chunk, progress=False)
        runs[f"chunk {chunk}"] = score.read_scores(out)[0]
    with distributed.local_cluster(2, processes=False) as client:
        out = tmp_path / "w2.h5"
        score.score_dask(
            model,
            arch.root,
            out,
            client=client,
            part_frames=400,
            chunk_frames=128,
            progress=False,
        )
        runs["2 workers"] = score.read_scores(out)[0]
    ref = runs.pop("chunk 37")
    key = ["file", "offset"]
    ref = ref.sort_values(key).reset_index(drop=True)
    assert len(ref) == 1500
    for name, df in runs.items():
        df = df.sort_values(key).reset_index(drop=True)
        assert np.array_equal(df["score"].to_numpy(), ref["score"].to_numpy()), name


def test_resume_with_other_scoring_options_is_refused(vae_model, tmp_path):
    import json

    from phbook import score

    arch, model = vae_model
    out = tmp_path / "s.h5"
    real_write = score._Journal.write
    calls = {"n": 0}

    def flaky(self, part, chunk, result):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_write(self, part, chunk, result)

    score._Journal.write = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            score.score(model, arch.root, out, chunk_frames=100, progress=False)
    finally:
        score._Journal.write = real_write
    manifest = score.journal_path(out) / "manifest.json"
    m = json.loads(manifest.read_text())
    assert m["scoring"]["device"] == "cpu"
    m["scoring"]["device"] = "cuda"  # as if the run had started on a GPU
    manifest.write_text(json.dumps(m))
    with pytest.raises(score.ScoreError, match="scoring option device .was 'cuda'"):
        score.score(model, arch.root, out, chunk_frames=100, progress=False)
    # another chunk size is not another scoring option: the run resumes
    m["scoring"]["device"] = "cpu"
    manifest.write_text(json.dumps(m))
    score.score(model, arch.root, out, chunk_frames=333, progress=False)
    assert score.read_scores(out)[1]["n_scored"] == 1500
