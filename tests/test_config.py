import numpy as np
import pytest
import torch

import phbook
from phbook import config


def test_profile_default_and_choice(monkeypatch):
    monkeypatch.delenv("PHBOOK_PROFILE")
    assert config.profile() == "full"
    monkeypatch.setenv("PHBOOK_PROFILE", "quick")
    assert config.profile() == "quick"
    monkeypatch.setenv("PHBOOK_PROFILE", " FULL ")
    assert config.profile() == "full"


def test_unknown_profile_lists_valid_values(monkeypatch):
    monkeypatch.setenv("PHBOOK_PROFILE", "fast")
    with pytest.raises(config.ConfigError, match="quick, full"):
        config.profile()


def test_sizes_differ_by_profile_and_are_read_only(monkeypatch):
    quick = config.sizes("quickstart", "quick")
    full = config.sizes("quickstart", "full")
    assert set(quick) == set(full)
    assert full.n_train > quick.n_train
    with pytest.raises(TypeError):
        quick["n_train"] = 1
    with pytest.raises(AttributeError, match="this chapter has"):
        _ = quick.no_such_size
    with pytest.raises(config.ConfigError, match="known chapters"):
        config.sizes("no-such-chapter")


def test_register_sizes_requires_matching_keys():
    with pytest.raises(config.ConfigError):
        config.register_sizes("course", {"n": 1}, {"m": 2})
    config.register_sizes("course", {"n": 1}, {"n": 2})
    assert config.sizes("course", "full").n == 2


def test_device_selection(monkeypatch):
    assert config.device().type in ("cpu", "cuda")
    monkeypatch.setenv("PHBOOK_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    monkeypatch.setenv("PHBOOK_DEVICE", "tpu")
    with pytest.raises(config.ConfigError, match="valid values: cpu, cuda"):
        config.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("PHBOOK_DEVICE", "cuda")
        with pytest.raises(config.ConfigError, match="not available"):
            config.device()


def test_seeding_repeats_every_generator():
    def draw():
        return (np.random.rand(3), torch.rand(3), __import__("random").random())

    config.seed_everything(7)
    a = draw()
    config.seed_everything(7)
    b = draw()
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert a[2] == b[2]
    config.seed_everything(8)
    assert not torch.equal(a[1], draw()[1])


def test_data_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PHBOOK_DATA", str(tmp_path / "cache"))
    assert config.data_dir() == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()
    assert config.checkpoint_dir() == tmp_path / "cache" / "checkpoints" / "quick"


def test_setup_reports_session(capsys):
    session = phbook.setup(seed=3)
    assert session.profile == "quick" and session.seed == 3
    assert "profile quick" in capsys.readouterr().out


def test_sizes_show_as_one_readable_line_in_a_notebook():
    shown = config.Sizes(
        {"n_train": 10000, "seeds": (0, 1), "lr": 0.001, "fit": True}
    )._repr_markdown_()
    assert shown == (
        "Sizes: `n_train` = 10,000; `seeds` = [0, 1]; `lr` = 0.001; `fit` = True"
    )
