"""Every detector of the book head to head on one simulated PH benchmark (chapter 9).

Run ``python bench/benchmark.py`` (``PHBOOK_PROFILE=quick`` for the small, fast subset
of detectors and epochs; the default is ``full``). Sizes, seeds and the detector list
are ``phbook.config.sizes("benchmark")``; the work is done by
:mod:`phbook.studies.benchmark`, the same code chapter 9 runs. It prints progress, the
summary table (mean ± spread over seeds), the fusions, the alert thresholds and the
real-frame ranking, writes the tidy table as CSV and Markdown to
``<phbook data dir>/benchmark/`` and, as its last line, one JSON object:

``best_overall_auc``
    the highest ROC-AUC (all anomaly classes against normal frames, simulated
    held-out set, mean over seeds) of any detector or pre-registered fusion;
``best_detector``
    which one it is; ``best_tpr_at_fpr_1e-3`` is its TPR at FPR 1e-3 (mean over seeds);
``best_auc_strength_ge_0.5``
    the best detector's ROC-AUC on the brighter half of the anomalies (strength at
    least 0.5 of the simulator's 0-1 range) against all normal frames;
``best_fusion_search_auc``
    the best AUC of any fusion of 2-3 detectors found by searching on the test set
    (optimistic: the choice is fitted to the test labels);
``real_speckled_in_top5``
    how many of the speckled whole-quabo frames (found from the data) the best
    detector ranks among the 5 most anomalous of the real frames (null without the
    real sample); ``real_speckled`` is how many there are;
``real_speckled_first_by_detector``
    per detector, how many of the speckled frames it ranks among the first
    ``real_speckled`` of the real frames (4 of 4: they top its ranking);
``pyod_best_auc``
    the best overall ROC-AUC of PyOD's detectors (``pyod_best`` names it), run on the
    same arrays (:func:`phbook.studies.sidebyside.pyod_specs`);
``deep_family_auc``
    per deep family of the book (AE, beta-VAE, AAE, f-AnoGAN, FlowVAE, PixelCNN), the
    best overall ROC-AUC of its pixel- or latent-space scores;
``supervised_ceiling_auc``
    the overall ROC-AUC of the CNN trained with labels on a separate labelled set
    (:func:`phbook.studies.sidebyside.add_supervised`);
``real_injection_auc``
    per fault injected into the real frames (:data:`phbook.studies.sidebyside.FAULTS`), the
    best ROC-AUC of a single phbook detector trained on simulation (null without the
    real sample); ``real_injection_best`` names the detectors;
``scores_chunk_invariant``
    true only if every phbook detector gave bit-identical scores on the same frames
    scored whole, in two chunk sizes and on two worker threads each
    (:func:`phbook.studies.sidebyside.chunk_invariance`); ``pyod_chunk_invariant`` says the
    same of each PyOD detector;
``detectors``, ``families``, ``profile``, ``seeds``, ``wall_s``, ``cpu_s``, ``load_avg``
    what ran, how long the whole benchmark took (wall and CPU of this process) and the
    machine's 1-minute load average at the start and the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from phbook import config, metrics  # noqa: E402
from phbook.studies import benchmark, sidebyside  # noqa: E402

#: the book's deep families and the benchmark rows that belong to each
DEEP_FAMILIES = {
    "AE": ("AE", "AE latent", "AE mean"),
    "beta-VAE": ("VAE", "VAE latent"),
    "AAE": ("AAE", "AAE max"),
    "f-AnoGAN": ("f-AnoGAN", "f-AnoGAN max", "f-AnoGAN tuned", "f-AnoGAN tuned top4"),
    "FlowVAE": ("FlowVAE", "FlowVAE top4"),
    "PixelCNN": ("PixelCNN",),
}


def log(msg: str) -> None:
    print(msg, flush=True)


def main() -> dict:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    size = config.sizes("benchmark")
    side = config.sizes("sidebyside")
    profile = config.profile()
    load0 = os.getloadavg()[0]
    log(
        f"profile {profile}, device {config.device()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    data = benchmark.load_data(size)
    log(repr(data))
    specs = benchmark.detector_specs(size) + sidebyside.pyod_specs(side)
    result = benchmark.run(data, specs, size.seeds, log=log)
    sidebyside.add_supervised(result, data, side, log=log)
    benchmark.add_fusions(result, sidebyside.phbook_fusions(result))
    mine = sidebyside.phbook_detectors(result)

    summary = benchmark.summarize(result.table)
    out = config.data_dir() / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"benchmark-{profile}.csv"
    md = out / f"benchmark-{profile}.md"
    result.table.to_csv(csv, index=False)
    md.write_text(
        f"Profile {profile}, seeds {list(size.seeds)}, simulated data "
        f"(ph_benchmark seed 0).\n\n" + benchmark.to_markdown(summary) + "\n"
    )
    log(f"\ntidy table: {csv}\nsummary: {md}\n")
    top = benchmark.overall(result.table)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        log(
            top[
                [
                    "family",
                    "n_seeds",
                    "auc",
                    "auc_std",
                    "ap",
                    "tpr@1e-2",
                    "tpr@1e-3",
                    "f1_max",
                    "fit_s",
                    "score_frames_per_s",
                ]
            ]
            .round(3)
            .to_string()
        )

    search = benchmark.fusion_search(result, mine)
    log(
        "\nfusions of 2-3 detectors (seed 0; picking the best on the test set is "
        "optimistic):"
    )
    log(search.head(8).round(3).to_string())

    rate = size.trigger_rate_hz
    alerts = benchmark.alert_table(result.scores_of(), result.classes, 1.0, rate)
    log(f"\ndetected fraction at 1 false alarm per hour, trigger rate {rate} Hz:")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        log(alerts.drop(columns="threshold").to_string())

    unsup = top[~top["family"].isin(["supervised", "pyod"])]
    best = unsup.index[0]
    pyod_rows = top[top["family"] == "pyod"]
    deep_auc = {
        fam: round(float(top.loc[[n for n in names if n in top.index], "auc"].max()), 4)
        for fam, names in DEEP_FAMILIES.items()
        if any(n in top.index for n in names)
    }
    ceiling = float(top.loc[sidebyside.SUPERVISED, "auc"])
    log(
        f"\nbest phbook {best} {top.loc[best, 'auc']:.3f}; best PyOD "
        f"{pyod_rows.index[0]} {pyod_rows['auc'].iloc[0]:.3f}; supervised ceiling "
        f"{ceiling:.3f}; deep families {deep_auc}"
    )
    strength = sidebyside.auc_by_strength(
        result, data.strength_test, bins=side.strength_bins
    )
    per_bin = strength[strength["class"] == "all"].pivot(
        index="detector", columns="strength", values="auc"
    )
    log("\nROC-AUC by anomaly strength (all classes, bin centres):")
    log(per_bin.loc[top.index].round(3).to_string())
    x_inv = data.x_test[: side.invariance_frames]
    inv = sidebyside.chunk_invariance(
        {n: d for n, d in result.fitted.items() if n in mine or n in pyod_rows.index},
        x_inv,
        side.chunk_sizes,
        side.workers,
    )
    log(
        f"\nscores of {len(x_inv)} frames whole, in chunks of {list(side.chunk_sizes)}"
        f" on {list(side.workers)} worker threads: bit-identical?"
    )
    log(inv.to_string())
    chunk_ok = bool(inv.loc[[n for n in inv.index if n in mine], "identical"].all())
    labels = (result.classes != "normal").astype(int)
    bright = (data.strength_test >= 0.5) | (labels == 0)
    auc_bright = metrics.roc_auc(labels[bright], result.scores_of()[best][bright])
    log(f"\n{best}: ROC-AUC {auc_bright:.3f} on anomalies of strength >= 0.5")
    real_top5, n_speckled, real_summary, real_first = None, None, {}, {}
    injection, injection_best = None, None
    frames = benchmark.real_frames()
    if frames is None:
        log("\nreal sample absent (set PHBOOK_REAL_DATA): real-frame ranking skipped")
    else:
        speckled = benchmark.speckled_frames(frames.images)
        n_speckled = len(speckled)
        ranking = benchmark.rank_real(
            benchmark.score_frames(result, frames.images), speckled
        )
        log(f"\nreal frames: {len(frames)}; speckled (from the data): {speckled.tolist()}")
        for name in top.index:
            real_summary[name] = benchmark.flagged_in_top(ranking, name, 5)
            real_first[name] = benchmark.flagged_in_top(ranking, name, n_speckled)
            order = ranking.sort_values(f"{name} rank").index[:8].tolist()
            log(
                f"{name:24s} speckled in top 5: {real_summary[name]}/{n_speckled}, "
                f"in top {n_speckled}: {real_first[name]}; top 8 frames {order}"
            )
        real_top5 = real_summary[best]
        inj = sidebyside.real_injection_auc(
            lambda x: benchmark.score_frames(result, x), frames.images
        )
        log(f"\nROC-AUC on the {len(frames)} real frames with injected faults:")
        log(inj.loc[top.index].round(3).to_string())
        singles = inj.loc[[n for n in inj.index if n in mine]]
        injection = {f: round(float(singles[f].max()), 4) for f in singles.columns}
        injection_best = {f: str(singles[f].idxmax()) for f in singles.columns}
    variants = sidebyside.residual_score_table(
        result, data, frames.images if frames is not None else None
    )
    log("\nresidual scores of the same trained models (ROC-AUC):")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        log(variants.round(3).to_string())
    return {
        "best_overall_auc": round(float(top.loc[best, "auc"]), 4),
        "best_detector": best,
        "best_tpr_at_fpr_1e-3": round(float(top.loc[best, "tpr@1e-3"]), 4),
        "best_auc_strength_ge_0.5": round(float(auc_bright), 4),
        "best_fusion_search_auc": round(float(search["auc"].iloc[0]), 4),
        "real_speckled_in_top5": real_top5,
        "real_speckled": n_speckled,
        "real_speckled_in_top5_by_detector": real_summary or None,
        "real_speckled_first_by_detector": real_first or None,
        "pyod_best_auc": round(float(pyod_rows["auc"].iloc[0]), 4),
        "pyod_best": str(pyod_rows.index[0]),
        "deep_family_auc": deep_auc,
        "supervised_ceiling_auc": round(ceiling, 4),
        "real_injection_auc": injection,
        "real_injection_best": injection_best,
        "scores_chunk_invariant": chunk_ok,
        "pyod_chunk_invariant": {
            n: bool(inv.loc[n, "identical"]) for n in inv.index if n in pyod_rows.index
        },
        "detectors": result.detectors,
        "families": sorted(set(result.families.values())),
        "profile": profile,
        "seeds": list(size.seeds),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
