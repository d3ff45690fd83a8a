import json
from dataclasses import replace

import numpy as np
import pytest

from phbook import cli
from phbook import yardstick as Y
from phbook.io import archive as io_archive
from phbook.io import pff
from phbook.sim import calibration as C
from phbook.sim import maroc
from phbook.sim import panoseti as P


def test_the_calibrated_defaults_match_the_real_sample(real_ph256):
    """The seeded, smaller version of the issue's figure (20,000 frames in the bench)."""
    real = pff.read_frames(real_ph256, warn=False).images
    sim = P.simulate(4000, seed=11)
    c = Y.compare(real, sim.adc, n_boot=200)
    assert c.failures <= 1, str(c)


def test_the_package_data_file_holds_the_defaults():
    data = json.loads(P.CALIBRATED_FILE.read_text())
    inst, pop = C.load_parameters(P.CALIBRATED_FILE)
    assert inst == P.Instrument() and pop == P.ShowerPopulation()
    assert data["fit"]["call"] == "phbook.sim.calibration.fit_default()"
    assert data["report"]["failures"] == 0


@pytest.mark.slow
def test_calibration_recovers_a_shifted_setting():
    truth_inst = replace(P.Instrument(), pedestal_adc=P.Instrument().pedestal_adc + 8)
    fake_real = P.simulate(600, seed=3, instrument=truth_inst).adc
    before = Y.compare(fake_real, P.simulate(2000, seed=4).adc, n_boot=50)
    cal = C.calibrate(fake_real, n_sim=600, max_evaluations=30, n_check=1500, n_boot=50)
    assert cal.n_evaluations <= 32
    assert cal.comparison.distance < before.distance
    assert abs(cal.instrument.pedestal_adc - truth_inst.pedestal_adc) < 4
    assert "pass" in cal.report()


def test_too_few_usable_frames_is_an_error():
    dull = np.random.default_rng(0).normal(10, 5, (200, 16, 16)).astype(np.int16)
    with pytest.raises(ValueError, match=r"only 0 of 200 frames .* at least 50") as err:
        C.calibrate(dull, max_evaluations=2)
    assert "too uncertain" in str(err.value)  # says why that is too few


def test_cli_calibrate_on_too_few_frames_names_the_count(tmp_path, capsys):
    cli.main(["simulate", "-n", "30", "--seed", "2", "-o", str(tmp_path / "run"), "-q"])
    code = cli.main(["calibrate", str(tmp_path / "run"), "-o", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "p.json").exists()
    assert "of 30 frames" in err and "at least 50" in err, err


def test_parameter_files_reject_unknown_keys_and_bad_values(tmp_path):
    good = C.save_parameters(tmp_path / "p.json", P.Instrument(), P.ShowerPopulation())
    assert C.load_parameters(good) == (P.Instrument(), P.ShowerPopulation())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instrument": {"pe_treshold": 5}}))
    with pytest.raises(ValueError, match=r"pe_treshold.*valid keys: .*pe_threshold"):
        C.load_parameters(bad)
    bad.write_text(json.dumps({"instrument": {"pe_threshold": 500}}))
    with pytest.raises(ValueError, match="outside the physical range"):
        C.load_parameters(bad)
    bad.write_text(json.dumps({"population": {"size_idx": 2.0}}))
    with pytest.raises(ValueError, match=r"size_idx.*valid keys: .*size_index"):
        C.load_parameters(bad)
    bad.write_text(json.dumps({"instrumnet": {}}))
    with pytest.raises(ValueError, match=r"instrumnet.*valid top-level keys"):
        C.load_parameters(bad)
    bad.write_text(json.dumps({"instrument": {"baseline_adc": 9000}}))
    with pytest.raises(ValueError, match="baseline_adc 9000 is outside the ADC range"):
        C.load_parameters(bad)


def test_thresholds_and_baselines_outside_the_physical_range(tmp_path):
    with pytest.raises(ValueError, match="physical range"):
        P.Instrument(pe_threshold=0.3)
    with pytest.raises(ValueError, match="physical range"):
        P.Instrument(pe_threshold=150.0)
    for bad in (-5.0, 4095.0, 6000.0):  # an error, not a silent clamp
        with pytest.raises(ValueError, match="outside the ADC range"):
            P.Instrument(baseline_adc=bad)
    f = tmp_path / "quabo_ph_baseline.json"
    coefs = [700] * 256
    coefs[17] = 5000
    f.write_text(json.dumps({"date": "x", "quabos": [{"uid": "a", "coefs": coefs}]}))
    with pytest.raises(ValueError, match="pixel 17 baseline 5000"):
        P.Instrument(baseline_file=str(f))


def test_real_baseline_file_sets_the_saturation(real_ph256):
    path = real_ph256.parent / "quabo_ph_baseline.module_254.json"
    base = P.read_baselines(str(path))
    assert base.shape == (4, 16, 16) and 600 < base.mean() < 800
    inst = P.Instrument(baseline_file=str(path))
    f = P.simulate(300, seed=0, instrument=inst)
    assert f.adc.max() <= 4095 - base.min()


def test_quabo_offsets_gain_and_drift():
    inst = P.Instrument(quabo_pedestal_adc=(0, 0, 0, 40), pedestal_drift_adc=0.0)
    f = P.simulate(1500, seed=1, instrument=inst)
    med = np.median(f.adc, axis=(1, 2))
    assert np.median(med[f.quabo == 3]) - np.median(med[f.quabo == 0]) > 30
    drift = P.simulate(1500, seed=1, instrument=replace(inst, pedestal_drift_adc=60))
    dmed = np.median(drift.adc, axis=(1, 2))
    assert np.median(dmed[-200:]) - np.median(dmed[:200]) > 40
    bright = P.Instrument(quabo_gain=(1, 1, 1, 2))
    g = P.simulate(3000, seed=2, instrument=bright)
    size = Y.frame_statistics(g.adc)["size"].to_numpy()
    assert np.nanmedian(size[g.quabo == 3]) > 1.3 * np.nanmedian(size[g.quabo == 0])


def test_maroc_map_covers_the_quabo_once_per_chip():
    for q in range(4):
        pix = maroc.image_map(q)
        assert sorted(pix.ravel()) == list(range(256))
        for chip in range(4):  # each chip reads one 8 x 8 quarter
            r, c = pix[chip] // 16, pix[chip] % 16
            assert np.ptp(r) == 7 and np.ptp(c) == 7
    # the quarters rotate with the quabo's position
    assert maroc.image_map(0)[0, 0] != maroc.image_map(3)[0, 0]


def test_daq_failure_classes():
    f = P.simulate_anomalies(
        "dead_maroc",
        60,
        np.random.default_rng(0),
        P.Instrument(),
        P.ShowerPopulation(),
        strength=1.0,
    )
    for x, q in zip(f.adc, f.quabo, strict=True):
        dead = [np.abs(x[maroc.chip_pixels(int(q), k)]).max() <= 3 for k in range(4)]
        assert sum(dead) >= 1
    j = P.simulate(
        400,
        seed=1,
        anomaly_fraction=1,
        anomaly_classes=["pedestal_jump"],
        strength=(0.9, 1.0),
    )
    assert np.median(j.adc) > 150
    d = P.simulate(
        200, seed=2, anomaly_fraction=1, anomaly_classes=["dead_line"], strength=1.0
    )
    rows = (np.abs(d.adc) <= 3).all(axis=2).any(axis=1)
    cols = (np.abs(d.adc) <= 3).all(axis=1).any(axis=1)
    assert (rows | cols).all()
    s = P.simulate(50, seed=3, anomaly_fraction=1, anomaly_classes=["stuck_frame"])
    assert set(s.classes) == {"stuck_frame"} and len(s) == 50
    with pytest.raises(ValueError, match="valid: .*dead_maroc"):
        P.simulate(5, seed=0, anomaly_fraction=1, anomaly_classes=["dead_chip"])


def test_cli_simulate_writes_a_labelled_run(tmp_path, capsys):
    code = cli.main(
        [
            "simulate",
            "-n",
            "120",
            "--anomaly-fraction",
            "0",
            "--seed",
            "5",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0
    files = sorted(tmp_path.rglob("*.pff"))
    assert len(files) == 1 and pff.parse_filename(files[0]).dp == "ph256"
    frames = pff.read_frames(files[0], warn=False)
    assert len(frames) == 120
    classes, _ = io_archive.read_truth(files[0])
    assert set(classes) == {"normal"}
    labels = (files[0].parent / "labels.csv").read_text().splitlines()
    assert len(labels) == 121 and labels[2].split(",")[2] == "636"


def test_cli_calibrate_reports_and_rejects_bad_input(tmp_path, capsys):
    cli.main(["simulate", "-n", "300", "--seed", "1", "-o", str(tmp_path / "run"), "-q"])
    out = tmp_path / "params.json"
    code = cli.main(
        [
            "calibrate",
            str(tmp_path / "run"),
            "-o",
            str(out),
            "--n-sim",
            "400",
            "--max-evaluations",
            "6",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "simulated frames" in printed and "size" in printed
    inst, _ = C.load_parameters(out)
    assert P.PE_THRESHOLD_RANGE[0] <= inst.pe_threshold <= P.PE_THRESHOLD_RANGE[1]
    code = cli.main(
        ["simulate", "-n", "10", "-o", str(tmp_path / "x"), "--pe-threshold", "0.2", "-q"]
    )
    assert code == 1 and "physical range" in capsys.readouterr().err


def test_soft_trigger_records_frames_below_the_threshold():
    sharp = P.Instrument(trigger_spread=0.0)
    soft = P.Instrument(trigger_spread=0.2)
    a = P.simulate(2000, seed=4, instrument=sharp).adc.max(axis=(1, 2))
    b = P.simulate(2000, seed=4, instrument=soft).adc.max(axis=(1, 2))
    thr = sharp.threshold_adc
    assert (a > thr).all()
    assert 0.02 < np.mean(b <= thr) < 0.5 and b.min() > 0.4 * thr
    with pytest.raises(ValueError, match="trigger_spread"):
        P.Instrument(trigger_spread=0.9)
