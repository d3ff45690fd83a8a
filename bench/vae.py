"""Benchmark of chapters 2-4: beta-VAE training throughput and the best detector's AUC.

Run: ``PHBOOK_PROFILE=quick .venv/bin/python bench/vae.py`` (or ``full``).

1. Training throughput of the book's beta-VAE on 16x16 frames through the book's one
   training loop (:func:`phbook.train.fit`, data resident on the device), with the
   thread count ``phbook.setup`` chooses (:func:`phbook.config.threads`: 1 unless
   ``PHBOOK_THREADS`` says otherwise). The figure is the median over timed epochs after
   a warm-up epoch, repeated for the batch size the chapters use and for a large batch,
   and once more for the large batch while the bench itself runs one competing
   CPU-bound process (a busy loop), as on a laptop or a shared machine that is not idle
   (``vae_train_images_per_s_loaded``). Chapter 0's autoencoder is timed the same way
   at that chapter's batch size, idle and loaded (``ae_train_images_per_s``,
   ``ae_train_images_per_s_loaded``).
2. Every detector of chapters 2-4 (classical baselines included) on the held-out
   simulated test set: the per-class ROC-AUC table and the best ROC-AUC over all
   classes. Models are trained through ``load_or_train`` under the chapters' names, so
   they are loaded when the chapters have run in the same profile.

Progress goes to stdout as it happens; the last line is one JSON object.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from phbook import config, datasets, detectors, metrics, train  # noqa: E402
from phbook.studies import beta_vaes  # noqa: E402


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def chapter0_autoencoder() -> torch.nn.Module:
    """Chapter 0's autoencoder, built from the chapter's own cell (its one definition)."""
    nb = json.loads((ROOT / "book" / "00_quickstart.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    source = next(c for c in cells if "class TinyAutoencoder" in c)
    namespace: dict = {"torch": torch}
    exec(compile(source, "book/00_quickstart.ipynb", "exec"), namespace)
    return namespace["TinyAutoencoder"]()


def beta_vae() -> torch.nn.Module:
    """Chapter 3's beta-VAE (beta does not change the cost)."""
    return beta_vaes.make_vae(beta=0.01, kl_warmup=2)


def throughput(
    x: np.ndarray, batch_size: int, epochs: int, dev, make_model=beta_vae
) -> float:
    """Median training images/s over ``epochs`` timed epochs after one warm-up epoch."""
    torch.manual_seed(0)
    model = make_model()
    hist = train.fit(
        model,
        x,
        epochs=epochs + 1,
        batch_size=batch_size,
        lr=2e-3,
        device=dev,
        progress=False,
    )
    rates = hist["images_per_s"].to_numpy()[1:]
    say(
        f"  batch {batch_size}: epochs at "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + " images/s"
    )
    return float(np.median(rates))


def _busy() -> None:
    while True:
        pass


def loaded_throughput(
    x: np.ndarray, batch_size: int, epochs: int, dev, make_model=beta_vae
) -> float:
    """:func:`throughput` while one other process keeps a CPU core busy."""
    ctx = multiprocessing.get_context("spawn")
    competitor = ctx.Process(target=_busy, daemon=True)
    competitor.start()
    try:
        time.sleep(0.5)
        return throughput(x, batch_size, epochs, dev, make_model)
    finally:
        competitor.terminate()
        competitor.join()


def main() -> None:
    profile = config.profile()
    dev = config.device()
    config.use_threads()
    say(
        f"profile {profile}, device {dev}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    size = config.sizes("beta_vae")
    data = datasets.ph_benchmark_data(size)  # chapters 3 and 4's data
    x_train, x_test, classes = data.x_train, data.x_test, data.classes
    say(f"data: {len(x_train)} training frames, {len(x_test)} test frames (simulated)")

    # -- 1. throughput
    n_speed = min(len(x_train), 40000 if profile == "full" else 8000)
    big = 8192 if dev.type == "cuda" else 1024
    epochs = 5 if profile == "full" else 3
    say(f"training throughput on {n_speed} frames of 16x16:")
    rate_book = throughput(x_train[:n_speed], size.batch_size, epochs, dev)
    rate_big = throughput(x_train[:n_speed], big, epochs, dev)
    say("the same, with one competing CPU-bound process running:")
    rate_loaded = loaded_throughput(x_train[:n_speed], big, epochs, dev)
    say(f"  loaded / idle: {rate_loaded / rate_big:.0%}")
    qsize = config.sizes("quickstart")
    say(f"chapter 0's autoencoder, batch {qsize.batch_size}, idle then loaded:")
    ae_idle = throughput(
        x_train[:n_speed], qsize.batch_size, epochs, dev, chapter0_autoencoder
    )
    ae_loaded = loaded_throughput(
        x_train[:n_speed], qsize.batch_size, epochs, dev, chapter0_autoencoder
    )
    say(f"  loaded / idle: {ae_loaded / ae_idle:.0%}")

    # -- 2. every detector of chapters 2-4
    x_fit, x_val = data.x_fit, data.x_val
    asize = config.sizes("autoencoders")
    scores: dict[str, np.ndarray] = {}

    def run(name: str, det) -> None:
        t = time.perf_counter()
        scores[name] = det.anomaly_score(x_test)
        auc = metrics.roc_auc(classes != "normal", scores[name])
        say(f"  {name}: ROC-AUC {auc:.3f} ({time.perf_counter() - t:.1f} s to score)")

    say("classical baselines:")
    run("IncrementalPCA", detectors.IncrementalPCADetector(32, batch_size=2048).fit(x_fit))
    run(
        "dictionary",
        detectors.DictionaryLearningDetector(
            n_components=32,
            n_nonzero=asize.n_nonzero,
            alpha=1.0,
            batch_size=256,
            max_iter=asize.dict_epochs,
        ).fit(x_fit),
    )
    run("IsolationForest", detectors.IsolationForestDetector(n_estimators=200).fit(x_fit))
    run("LOF", detectors.LOFDetector(n_neighbors=20).fit(x_fit[: asize.n_lof]))

    say("sparse autoencoder (chapter 2):")
    ae = detectors.AutoencoderDetector(
        model_kwargs={"latent_dim": 32, "l1": 1e-5},
        fit_kwargs=dict(
            x_val=x_val, epochs=asize.epochs, batch_size=asize.batch_size, lr=2e-3
        ),
        name="ch02-sparse-ae",
    ).fit(x_fit)
    run("sparse AE recon", ae)
    run(
        "sparse AE recon_max",
        detectors.AutoencoderDetector(ae.model_, train=False, score="recon_max").fit(x_fit),
    )

    say("beta-VAEs (chapters 3 and 4):")
    study = beta_vaes.load_or_train(data, size)  # loaded when chapter 3 has run
    say(f"  {study}")
    n_gmm = min(config.sizes("latent_space").gmm_samples, len(x_fit))
    for name, model in study.models.items():
        dets = {}
        for score in ("recon", "recon_max", "elbo", "kl", "latent_nll", "latent_dist"):
            det = detectors.VAEDetector(
                model, train=False, score=score, n_samples=4, gmm_max_samples=n_gmm
            ).fit(x_fit[:n_gmm] if score.startswith("latent") else x_fit)
            dets[score] = det
            run(f"VAE {name} beta {score}", det)
        # chapter 4: Fisher fusion of three scores chosen a priori, p-values from the
        # held-out validation frames
        fusion = detectors.ScoreFusion(
            [dets["recon"], dets["recon_max"], dets["latent_nll"]], refit=False
        ).fit(x_val)
        run(f"VAE {name} beta fused", fusion)

    table = metrics.compare(scores, classes)
    with_pd_options = table.T.round(3).to_string()
    say("per-class ROC-AUC of every detector (rows: detectors):\n" + with_pd_options)
    overall = table.drop(columns="n").loc["all"]
    best = str(overall.idxmax())
    say(f"best detector over all classes: {best} (ROC-AUC {overall[best]:.3f})")
    print(
        json.dumps(
            {
                "vae_train_images_per_s": round(rate_big, 1),
                "vae_train_images_per_s_loaded": round(rate_loaded, 1),
                "loaded_fraction": round(rate_loaded / rate_big, 3),
                "vae_train_images_per_s_chapter_batch": round(rate_book, 1),
                "ae_train_images_per_s": round(ae_idle, 1),
                "ae_train_images_per_s_loaded": round(ae_loaded, 1),
                "ae_loaded_fraction": round(ae_loaded / ae_idle, 3),
                "ae_batch_size": qsize.batch_size,
                "batch_size": big,
                "chapter_batch_size": size.batch_size,
                "threads": torch.get_num_threads(),
                "device": str(dev),
                "profile": profile,
                "best_overall_auc": round(float(overall[best]), 4),
                "best_detector": best,
            }
        )
    )


if __name__ == "__main__":
    main()
