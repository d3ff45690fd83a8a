"""Benchmark of the case studies: how fast the simulators make their images.

Prints what it measures as it goes and, as its last line, one JSON object:

``lensing_gen_10k_s``
    seconds to simulate 10,000 noisy 64 x 64 strong-lens images (equal thirds of
    normal, CDM and vortex lenses, fixed redshift) with every CPU core. The full
    profile times 10,000 images; the quick profile times fewer and scales linearly
    (``lensing_gen_extrapolated`` is then true). Median of ``repeats`` runs after a
    warm-up run (which also compiles the numba kernel and starts the worker server).
``lensing_gen_images_per_s``, ``lensing_gen_workers``, ``lensing_gen_n``
    the throughput, the worker processes, the images per timed run.
``lensing_ms_per_image_1_worker`` / ``lensing_baseline_ms_per_image``
    one process: this simulator against drawing the same lenses one by one with
    lenstronomy's ``ImageModel`` (every subhalo its own profile, then Poisson noise),
    the standard route (``phbook.sim.lensing.reference_image``).
``transients_gen_10k_s``, ``galaxies_gen_10k_s``
    the other two simulators, one process.
``profile``
    the PHBOOK_PROFILE the numbers were taken in.

``lensing_auc_fixed``, ``lensing_auc_varying``
    ROC-AUC of the best lensing detector of chapter 10 (the smooth-lens fit) on the
    fixed- and varying-redshift test sets, in the sizes of the profile
    (:func:`lensing_aucs`).

``deeplense_regime_auc``, ``deeplense_regime_ordered``
    chapter 10's DeepLense-like regime (fixed redshift): model (RBM, conv AE, conv VAE,
    AAE) -> ROC-AUC, the mean over three training seeds, and whether the means follow
    the paper's ordering; ``deeplense_regime_auc_sd`` and ``_seeds`` the spread and
    each seed's, ``deeplense_regime_ordered_beyond_scatter`` whether every gap of the
    ordering exceeds the two models' standard deviations added
    (:func:`deeplense_regime`).

``deeplense_control_auc``, ``deeplense_control_auc_sd``
    the same networks trained the same way on the default regime's lenses (the macro
    lens varies): the control that says the regime, not the training, makes the
    difference (:func:`deeplense_control`).

``lensing_contamination_drop``
    chapter 10's contamination study of the seed proposal's GAN: variant
    (``with_encoder``, ``without_encoder``) -> ROC-AUC lost from 0 to 10% substructure
    lenses in training, mean over seeds; ``lensing_contamination_drop_sd`` their
    seed-to-seed standard deviations, ``lensing_contamination_beyond_scatter`` whether
    the drop is smaller with the encoder beyond that scatter, and
    ``lensing_contamination_auc`` the mean ROC-AUC per variant and level
    (:func:`lensing_contamination`); ``lensing_contamination_drop_latent_norm`` and
    ``lensing_contamination_auc_latent_norm`` the same for Berg et al.'s own cue, the
    norm of an image's code, on the same networks.

``chase_scae_conv_layers``, ``chase_mlp_auc``, ``chase_dnmse_top100``,
``chase_best_latent_auc``, ``chase_pca_auc``
    chapter 11's CHASE study (:func:`chase_aucs`).

``mergers_inconsistent``
    chapter 12: method -> sample (all, pre-merger, post-merger) -> percentage of
    inconsistent images (:func:`mergers_inconsistent`).

One function per measurement in ``MEASUREMENTS`` below.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from phbook import config  # noqa: E402
from phbook.sim import dataset, galaxies, lensing, transients  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        log(f"  run {r + 1}/{repeats}: {times[-1]:.2f} s")
    return times


def measure_lensing_generation(sizes) -> dict:
    """Seconds for 10,000 lensing images with all cores (median of repeats)."""
    n = int(sizes.lensing_gen_n)
    workers = dataset.default_workers()
    log(
        f"lensing: warm-up (numba compile, worker start), then {n} images x "
        f"{sizes.repeats} with {workers} worker(s)"
    )
    lensing.simulate(2 * dataset.CHUNK_SIZE, seed=99, workers=workers, progress=False)
    times = _timed(
        lambda: lensing.simulate(n, seed=1, workers=workers, progress=False),
        int(sizes.repeats),
    )
    median = statistics.median(times)
    out = {
        "lensing_gen_n": n,
        "lensing_gen_workers": workers,
        "lensing_gen_runs_s": [round(t, 2) for t in times],
        "lensing_gen_images_per_s": round(n / median, 1),
        "lensing_gen_10k_s": round(median * 10_000 / n, 2),
        "lensing_gen_extrapolated": n != 10_000,
    }
    log(
        f"lensing: {out['lensing_gen_images_per_s']} images/s -> "
        f"{out['lensing_gen_10k_s']} s for 10k"
        + (" (extrapolated)" if out["lensing_gen_extrapolated"] else "")
    )
    return out


def measure_lensing_baseline(sizes) -> dict:
    """One process: our batched renderer against lenstronomy's ImageModel per lens."""
    n = int(sizes.baseline_n)
    log(f"lensing baseline: {n} lenses, one process, ours vs lenstronomy ImageModel")
    lensing.simulate(8, seed=98, workers=1, progress=False)  # warm-up
    ours = _timed(lambda: lensing.simulate(n, seed=2, workers=1, progress=False), 3)
    data = lensing.simulate(n, seed=2, workers=1, progress=False, noise=False)
    s = data.meta["settings"]
    exposure = s["exposure_time"] * s["num_exposures"]
    sky = 10 ** (-0.4 * (s["sky_brightness"] - s["zero_point"])) * exposure
    sky *= data.meta["pixel_scale"] ** 2
    rng = np.random.default_rng(0)

    def baseline():
        for i in range(n):
            model = lensing.reference_image(data, i)
            counts = rng.poisson(model + sky) + rng.normal(
                0, np.sqrt(s["num_exposures"]) * s["read_noise"], model.shape
            )
            _ = counts - sky

    lensing.reference_image(data, 0)  # warm-up
    base = _timed(baseline, 3)
    out = {
        "lensing_ms_per_image_1_worker": round(1e3 * statistics.median(ours) / n, 2),
        "lensing_baseline_ms_per_image": round(1e3 * statistics.median(base) / n, 2),
    }
    out["lensing_speedup_vs_baseline"] = round(
        out["lensing_baseline_ms_per_image"] / out["lensing_ms_per_image_1_worker"], 2
    )
    log(
        f"lensing: {out['lensing_ms_per_image_1_worker']} ms/image (ours, 1 process)"
        f" vs {out['lensing_baseline_ms_per_image']} ms/image (lenstronomy ImageModel)"
    )
    return out


def measure_stamp_generation(sizes) -> dict:
    """Seconds for 10,000 transient stamps and 10,000 galaxy stamps, one process."""
    n = int(sizes.lensing_gen_n)
    out = {}
    for name, module in (("transients", transients), ("galaxies", galaxies)):
        log(f"{name}: warm-up, then {n} stamps x {sizes.repeats}, one process")
        module.simulate(64, seed=97, progress=False)
        times = _timed(
            lambda m=module: m.simulate(n, seed=1, workers=1, progress=False),
            int(sizes.repeats),
        )
        out[f"{name}_gen_10k_s"] = round(statistics.median(times) * 10_000 / n, 2)
        log(f"{name}: {out[f'{name}_gen_10k_s']} s for 10k")
    return out


def chase_aucs(profile: str) -> dict:
    """Chapter 11's CHASE study on simulated candidates (``transients`` sizes), with
    :func:`phbook.studies.chase.run_study`, the chapter's own function.

    ``chase_scae_conv_layers``: the convolutional layers of the SCAE's encoder (the
    paper: 3); ``chase_mlp_auc`` and ``chase_dnmse_top100``: method -> ROC-AUC of the
    one-hidden-layer MLP on the codes, and mean DNMSE of the 100 candidates nearest to
    the real transients in latent space (paper's and book's rows);
    ``chase_best_latent_auc`` / ``chase_pca_auc``: the best MLP ROC-AUC of the paper's
    nonlinear codes (SCAE, CVAE) and that of IncrementalPCA. Same data and checkpoint
    names as the chapter, so a run after the chapter loads its trained networks.
    """
    import torch

    from phbook.models.ae import ChaseSCAE
    from phbook.studies import chase

    s = config.sizes("transients", profile)
    log(f"chase: study on {s.n_candidates} candidates per set, {s.n_mlp_train} labels")
    sets = chase.chase_sets(s.n_candidates, s.n_reals, s.n_mlp_train, s.n_mlp_test)
    t0 = time.perf_counter()
    res = chase.run_study(
        sets,
        max_epochs=s.max_epochs,
        patience=s.patience,
        kl_warmup=s.kl_warmup,
        batch_size=s.batch_size,
        dict_epochs=s.dict_epochs,
        top=100,
        name="ch11",
    )
    log(f"chase: {time.perf_counter() - t0:.1f} s")
    log(res.table().round(3).to_string())
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in ChaseSCAE().encoder.modules())
    return {
        "chase_scae_conv_layers": int(convs),
        "chase_mlp_auc": {m: round(v, 4) for m, v in res.auc.items()},
        "chase_dnmse_top100": {m: round(v, 4) for m, v in res.dnmse_top(100).items()},
        "chase_dnmse_any_order": round(res.nmse_mean, 4),
        "chase_best_latent_auc": round(max(res.auc[m] for m in chase.NONLINEAR_METHODS), 4),
        "chase_pca_auc": round(res.auc["IncrementalPCA"], 4),
    }


def lensing_aucs(profile: str) -> dict:
    """ROC-AUC of the book's best lensing detector on both redshift sets (chapter 10).

    The smooth-lens fit (:class:`phbook.detectors.SmoothLensDetector`, ``"coherent"``
    score, Adam then Levenberg-Marquardt) with the chapter's sizes of ``profile``:
    trained on smooth lenses only (the chapter's cached training set, also the
    library of starting points), scored on a test set of equal thirds of normal, CDM
    and vortex lenses.
    """
    from phbook import detectors, metrics

    sizes = config.sizes("lensing", profile)
    out = {}
    for z in ("fixed", "varying"):
        t0 = time.process_time()
        train = lensing.load_or_simulate(
            sizes.n_train, seed=11, fractions={"normal": 1}, redshift=z, progress=False
        )
        test = lensing.load_or_simulate(sizes.n_test, seed=12, redshift=z, progress=False)
        det = detectors.SmoothLensDetector(
            train,
            n_starts=sizes.n_starts,
            steps=sizes.fit_steps,
            polish=sizes.fit_polish,
        ).fit(train.images)
        auc = metrics.roc_auc(test.labels, det.anomaly_score(test.images))
        out[f"lensing_auc_{z}"] = round(float(auc), 4)
        log(
            f"lensing AUC ({z} redshift, smooth-lens fit, {len(test)} test lenses): "
            f"{auc:.3f} in {time.process_time() - t0:.0f} CPU s (main process)"
        )
    out["lensing_auc_detector"] = "smooth-lens fit (coherent)"
    out["lensing_auc_n_test"] = int(sizes.n_test)
    return out


def _deeplense_seeds(profile: str, seeds, regime: str) -> tuple:
    """``(table, mean, sd)`` of the four networks of :mod:`phbook.studies.deeplense`
    on ``regime``'s lenses (fixed redshift), one column per seed of ``seeds``."""
    from phbook.studies import deeplense

    if len(seeds) < 1:
        raise ValueError("the DeepLense measurements need at least one seed")
    t0 = time.process_time()
    columns = []
    for seed in seeds:
        res = deeplense.run(("fixed",), profile, seed=seed, regime=regime)
        columns.append([res.auc.loc[m, "ours, fixed"] for m in deeplense.MODELS])
        log(f"DeepLense networks, {regime} regime, seed {seed}:\n{res.auc.round(3)}")
    table = np.array(columns).T
    mean = table.mean(1)
    sd = table.std(1, ddof=1) if len(seeds) > 1 else np.zeros(len(mean))
    log(
        f"DeepLense networks, {regime} regime: {len(seeds)} seeds, "
        f"{time.process_time() - t0:.0f} CPU s (main process); mean +- sd: "
        + ", ".join(
            f"{m} {a:.3f} +- {b:.3f}"
            for m, a, b in zip(deeplense.MODELS, mean, sd, strict=True)
        )
    )
    return table, mean, sd


def _per_model(values) -> dict:
    from phbook.studies import deeplense

    return {m: round(float(v), 4) for m, v in zip(deeplense.MODELS, values, strict=True)}


def deeplense_regime(profile: str, seeds=(0, 1, 2)) -> dict:
    """The four networks of Alexander et al. in the DeepLense-like regime (fixed macro
    lens and source population, fixed redshift), with chapter 10's sizes and
    checkpoints of ``profile`` (:mod:`phbook.studies.deeplense`), trained with each of
    ``seeds``: the mean ROC-AUC per model, its seed-to-seed standard deviation, each
    seed's, and whether the means follow the paper's ordering (also with every gap
    larger than the two models' standard deviations added: a rough test, since three
    seeds estimate a standard deviation loosely)."""
    from phbook.studies import deeplense

    table, mean, sd = _deeplense_seeds(profile, seeds, "deeplense")
    gaps = np.diff(mean)
    return {
        "deeplense_regime_auc": _per_model(mean),
        "deeplense_regime_auc_sd": _per_model(sd),
        "deeplense_regime_auc_seeds": {
            m: [round(float(v), 4) for v in row]
            for m, row in zip(deeplense.MODELS, table, strict=True)
        },
        "deeplense_regime_seeds": list(seeds),
        "deeplense_regime_ordered": bool(np.all(gaps > 0)),
        "deeplense_regime_ordered_beyond_scatter": bool(np.all(gaps > sd[1:] + sd[:-1])),
    }


def deeplense_control(profile: str, seeds=(0, 1, 2)) -> dict:
    """The control of chapter 10: the same four networks as :func:`deeplense_regime`,
    trained the same way (sizes, epochs, stretch, scores), on the default regime's
    lenses, whose macro lens varies (``deeplense.run(..., regime="default")``), with
    each of ``seeds``: the mean ROC-AUC per model and its standard deviation."""
    _, mean, sd = _deeplense_seeds(profile, seeds, "default")
    return {
        "deeplense_control_auc": _per_model(mean),
        "deeplense_control_auc_sd": _per_model(sd),
    }


def lensing_contamination(profile: str = "full") -> dict:
    """Chapter 10's contamination study (:mod:`phbook.studies.lensing_gan`) with the
    ``lensing_gan`` sizes of ``profile``: the same data, stretch and checkpoint names
    as the chapter, so a run after the chapter's full build loads its trained
    networks. :func:`main` runs the full sizes in every profile: the quick ones train
    the GANs for a dozen steps, too few to show anything (``lensing_contamination_
    sizes`` names the profile whose sizes were used)."""
    from phbook.studies import lensing_gan

    size = config.sizes("lensing_gan", profile)
    normal = lensing.load_or_simulate(
        config.sizes("lensing", profile).n_train,
        seed=11,
        fractions={"normal": 1},
        redshift="fixed",
        progress=False,
    ).images
    data = lensing_gan.lens_data(size, normal, lensing_gan.chapter_stretch(normal))
    log(
        f"lensing contamination: {len(lensing_gan.LEVELS)} levels x 2 variants x "
        f"{size.n_seeds} seeds, {size.n_train} training lenses, {size.epochs} epochs"
    )
    t0 = time.perf_counter()
    # the chapter's checkpoint names when the sizes are the chapter's, others when not
    # (a quick build's checkpoints are not overwritten with full-size networks)
    name = "ch10-pgan" if profile == config.profile() else f"bench-pgan-{profile}"
    res = lensing_gan.run_study(
        data["normal"],
        data["substructure"],
        data["x_test"],
        data["y_test"],
        size,
        name=name,
    )
    drop = lensing_gan.drops(res, high=0.10)
    holds, text = lensing_gan.verdict(drop)
    log(f"lensing contamination: {time.perf_counter() - t0:.1f} s")
    log(lensing_gan.summary(res).round(3).to_string())
    log(text)
    key = {"with encoder": "with_encoder", "without encoder": "without_encoder"}
    means = res.groupby(["variant", "fraction"])["auc"].mean()
    # Berg et al.'s own cue, the norm of the code, on the same networks
    norm_drop = lensing_gan.drops(res, high=0.10, value="auc_norm")
    norm_means = res.groupby(["variant", "fraction"])["auc_norm"].mean()
    log("latent norm: " + lensing_gan.summary(res, value="auc_norm").round(3).to_string())
    return {
        "lensing_contamination_drop_latent_norm": {
            key[v]: round(float(norm_drop.loc[v, "mean"]), 4) for v in key
        },
        "lensing_contamination_auc_latent_norm": {
            key[v]: {
                f"{f:g}": round(float(norm_means[v, f]), 4) for f in lensing_gan.LEVELS
            }
            for v in key
        },
        "lensing_contamination_drop": {
            key[v]: round(float(drop.loc[v, "mean"]), 4) for v in key
        },
        "lensing_contamination_drop_sd": {
            key[v]: round(float(drop.loc[v, "sd"]), 4) for v in key
        },
        "lensing_contamination_beyond_scatter": holds,
        "lensing_contamination_auc": {
            key[v]: {f"{f:g}": round(float(means[v, f]), 4) for f in lensing_gan.LEVELS}
            for v in key
        },
        "lensing_contamination_n_seeds": int(size.n_seeds),
        "lensing_contamination_sizes": profile,
    }


def mergers_inconsistent(profile: str) -> dict:
    """Chapter 12's table of the galaxy lecture: the percentage of inconsistent images
    (score above the 95% quantile of the ordinary galaxies') per merger sample, for
    f-AnoGAN's WGAN-GP score and k-means (:mod:`phbook.studies.mergers`), with the
    chapter's sizes and checkpoints."""
    from phbook.studies import mergers

    t0 = time.perf_counter()
    scores, classes = mergers.merger_scores(config.sizes("galaxies", profile))
    table = mergers.inconsistent_percentages(scores, classes)
    log(f"mergers: {time.perf_counter() - t0:.1f} s\n{table.round(1).to_string()}")
    return {
        "mergers_inconsistent": {
            method: {sample: round(float(v), 2) for sample, v in col.items()}
            for method, col in table.items()
        }
    }


#: Every measurement, in order; each returns a dict of figures for the JSON line.
MEASUREMENTS = [
    measure_lensing_generation,
    measure_lensing_baseline,
    measure_stamp_generation,
    lambda sizes: lensing_aucs(config.profile()),
    lambda sizes: deeplense_regime(config.profile()),
    lambda sizes: deeplense_control(config.profile()),
]


def main() -> dict:
    profile = config.profile()
    sizes = config.sizes("case_studies")
    log(f"bench/case_studies.py | profile {profile} | {sizes}")
    results: dict = {}
    for measure in MEASUREMENTS:
        results.update(measure(sizes))
    results.update(lensing_contamination("full"))
    results.update(chase_aucs(profile))
    results.update(mergers_inconsistent(profile))
    results["profile"] = profile
    return results


if __name__ == "__main__":  # the worker processes import this file without running it
    print(json.dumps(main()), flush=True)
