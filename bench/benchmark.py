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
``detectors``, ``families``, ``profile``, ``seeds``, ``wall_s``, ``cpu_s``
    what ran, and how long the whole benchmark took (wall and CPU of this process).
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
from phbook.studies import benchmark  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def main() -> dict:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    size = config.sizes("benchmark")
    profile = config.profile()
    log(
        f"profile {profile}, device {config.device()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    data = benchmark.load_data(size)
    log(repr(data))
    result = benchmark.run(data, benchmark.detector_specs(size), size.seeds, log=log)
    benchmark.add_fusions(result)

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

    search = benchmark.fusion_search(
        result, [d for d in result.detectors if result.families[d] != "fusion"]
    )
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

    best = top.index[0]
    labels = (result.classes != "normal").astype(int)
    bright = (data.strength_test >= 0.5) | (labels == 0)
    auc_bright = metrics.roc_auc(labels[bright], result.scores_of()[best][bright])
    log(f"\n{best}: ROC-AUC {auc_bright:.3f} on anomalies of strength >= 0.5")
    real_top5, n_speckled, real_summary = None, None, {}
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
            order = ranking.sort_values(f"{name} rank").index[:8].tolist()
            log(
                f"{name:24s} speckled in top 5: {real_summary[name]}/{n_speckled}; "
                f"top 8 frames {order}"
            )
        real_top5 = real_summary[best]
    return {
        "best_overall_auc": round(float(top.loc[best, "auc"]), 4),
        "best_detector": best,
        "best_tpr_at_fpr_1e-3": round(float(top.loc[best, "tpr@1e-3"]), 4),
        "best_auc_strength_ge_0.5": round(float(auc_bright), 4),
        "best_fusion_search_auc": round(float(search["auc"].iloc[0]), 4),
        "real_speckled_in_top5": real_top5,
        "real_speckled": n_speckled,
        "real_speckled_in_top5_by_detector": real_summary or None,
        "detectors": result.detectors,
        "families": sorted(set(result.families.values())),
        "profile": profile,
        "seeds": list(size.seeds),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
