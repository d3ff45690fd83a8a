import math

import numpy as np
import pytest
import torch
from torch import nn

from phbook import train


class TinyAE(nn.Module):
    """A small autoencoder with dropout, so resume must restore torch's generator too."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 64)
        )

    def loss(self, x):
        x_hat = self.net(x).view_as(x)
        mse = ((x_hat - x) ** 2).mean()
        return {"loss": mse, "mse": mse}


def data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g)


def make_model(seed=0):
    torch.manual_seed(seed)
    return TinyAE()


def same_weights(a, b):
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_fit_returns_history_and_learns():
    model = make_model()
    hist = train.fit(
        model, data(), x_val=data(100, 1), epochs=6, batch_size=32, lr=3e-3, device="cpu"
    )
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5, 6]
    for col in ("train_loss", "train_mse", "val_loss", "seconds", "images_per_s"):
        assert col in hist
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]


def test_resume_after_interruption_gives_same_weights(tmp_path):
    x = data()
    reference = make_model()
    train.fit(reference, x, epochs=5, batch_size=32, seed=3, device="cpu")

    class Interrupt(Exception):
        pass

    def stop_after_two(state, row):
        if row["epoch"] == 2:
            raise Interrupt

    ckpt = tmp_path / "run.pt"
    interrupted = make_model()
    with pytest.raises(Interrupt):
        train.fit(
            interrupted,
            x,
            epochs=5,
            batch_size=32,
            seed=3,
            device="cpu",
            checkpoint=ckpt,
            callbacks=[stop_after_two],
        )
    assert train.load_checkpoint(ckpt)["epoch"] == 2
    resumed = make_model(seed=99)  # different initial weights: all must come from disk
    hist = train.fit(
        resumed, x, epochs=5, batch_size=32, seed=3, device="cpu", checkpoint=ckpt
    )
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5]
    assert same_weights(resumed, reference)


def test_nan_loss_names_epoch_and_step():
    class Exploding(TinyAE):
        calls = 0

        def loss(self, x):
            self.calls += 1
            out = super().loss(x)
            if self.calls == 13:  # epoch 2 (10 steps per epoch), step 3
                out["loss"] = out["loss"] * math.nan
            return out

    with pytest.raises(train.NonFiniteLossError, match=r"epoch 2, step 3 of 10"):
        train.fit(Exploding(), data(320), epochs=3, batch_size=32, device="cpu")


def test_load_or_train_loads_finished_model(tmp_path):
    x = data()
    model, hist = train.load_or_train(
        "tiny", make_model(), x, directory=tmp_path, epochs=3, batch_size=32, device="cpu"
    )
    assert (tmp_path / "tiny.pt").exists()
    calls = []
    spy = make_model(seed=5)
    original = spy.loss
    spy.loss = lambda batch: calls.append(1) or original(batch)
    again, hist2 = train.load_or_train(
        "tiny", spy, x, directory=tmp_path, epochs=3, batch_size=32, device="cpu"
    )
    assert not calls, "a finished checkpoint must be loaded, not trained again"
    assert same_weights(again, model)
    assert hist2.equals(hist)
    ckpt = torch.load(tmp_path / "tiny.pt", weights_only=True)
    assert ckpt["finished"]


def test_checkpoint_of_other_data_is_not_reused(tmp_path):
    train.load_or_train(
        "tiny",
        make_model(),
        data(),
        directory=tmp_path,
        epochs=2,
        batch_size=32,
        device="cpu",
    )
    with pytest.warns(UserWarning, match="different data"):
        train.load_or_train(
            "tiny",
            make_model(),
            data(seed=5),
            directory=tmp_path,
            epochs=2,
            batch_size=32,
            device="cpu",
        )


def test_checkpoint_of_the_same_values_rearranged_or_other_decay_is_not_reused(tmp_path):
    kw = {"directory": tmp_path, "epochs": 2, "batch_size": 32, "device": "cpu"}
    x = data()
    train.load_or_train("tiny", make_model(), x, **kw)
    flipped = torch.as_tensor(np.ascontiguousarray(np.flip(np.asarray(x), -1)))
    with pytest.warns(UserWarning, match="different data_order"):
        train.load_or_train("tiny", make_model(), flipped, **kw)
    with pytest.warns(UserWarning, match="different weight_decay"):
        train.load_or_train("tiny", make_model(), flipped, weight_decay=0.5, **kw)
    # a checkpoint written before data_order existed still matches on the rest
    ckpt = torch.load(tmp_path / "tiny.pt", weights_only=True)
    ckpt["fingerprint"].pop("data_order")
    torch.save(ckpt, tmp_path / "tiny.pt")
    calls = []
    spy = make_model()
    original = spy.loss
    spy.loss = lambda batch: calls.append(1) or original(batch)
    train.load_or_train("tiny", spy, flipped, weight_decay=0.5, **kw)
    assert not calls


def test_retraining_keeps_the_finished_model_until_the_new_one_is_done(tmp_path):
    kw = {"directory": tmp_path, "epochs": 2, "batch_size": 32, "device": "cpu"}
    model, _ = train.load_or_train("tiny", make_model(), data(), **kw)
    before = (tmp_path / "tiny.pt").read_bytes()
    broken = make_model(seed=3)
    broken.loss = lambda batch: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(train.NonFiniteLossError):
        train.load_or_train("tiny", broken, data(), retrain=True, **kw)
    assert (tmp_path / "tiny.pt").read_bytes() == before
    assert not (tmp_path / "tiny.pt.previous").exists()
    train.load_or_train("tiny", make_model(seed=4), data(), retrain=True, **kw)
    assert (tmp_path / "tiny.pt").read_bytes() != before
    assert not (tmp_path / "tiny.pt.previous").exists()


def test_early_stopping_restores_best_weights():
    x, x_val = data(), data(100, 1)
    model = make_model()
    hist = train.fit(
        model, x, x_val=x_val, epochs=40, batch_size=32, lr=0.05, patience=2, device="cpu"
    )
    assert len(hist) < 40
    best = hist["val_loss"].min()
    model.eval()
    with torch.no_grad():
        now = model.loss(x_val)["loss"].item()
    assert now == pytest.approx(best, rel=1e-5)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="epochs"):
        train.fit(make_model(), data(), epochs=0)
    with pytest.raises(ValueError, match="needs validation data"):
        train.fit(make_model(), data(), patience=3)
    with pytest.raises(ValueError, match="same length"):
        train.fit(make_model(), (data(10), np.zeros(9)))
    with pytest.raises(ValueError, match="plain file name"):
        train.checkpoint_path("../escape")


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        train.load_checkpoint(bad)


def test_multi_optimiser_training_step():
    class TwoPlayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 1)
            self.b = nn.Linear(4, 1)

        def configure_optimizers(self, lr, weight_decay):
            return {
                "a": torch.optim.SGD(self.a.parameters(), lr=lr),
                "b": torch.optim.SGD(self.b.parameters(), lr=lr),
            }

        def training_step(self, batch, optimizers, state):
            la = self.a(batch).pow(2).mean()
            optimizers["a"].zero_grad()
            la.backward()
            optimizers["a"].step()
            lb = torch.tensor(0.0)
            if state.step % 2 == 0:
                lb = self.b(batch).pow(2).mean()
                optimizers["b"].zero_grad()
                lb.backward()
                optimizers["b"].step()
            return {"loss": la.detach(), "b": lb.detach()}

    hist = train.fit(
        TwoPlayer(), torch.randn(64, 4), epochs=2, batch_size=16, lr=0.1, device="cpu"
    )
    assert {"train_loss", "train_b"} <= set(hist.columns)


# --------------------------------------------------- best epoch under a loss schedule


def blobs(n, seed):
    """Gaussian blobs at random places on 8x8 frames: a VAE has something to encode."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    c = torch.rand(n, 2, 1, 1, generator=g) * 7
    img = torch.exp(-((yy - c[:, :1]) ** 2 + (xx - c[:, 1:]) ** 2) / 3.0)
    return img + 0.05 * torch.randn(n, 1, 8, 8, generator=g)


def full_objective(model, x):
    """The loss with the final KL weight (beta), on the posterior means."""
    from phbook.models.vae import beta_vae_loss

    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        x_hat = model.decode(mu)
        return float(beta_vae_loss(x, x_hat, mu, logvar, model.beta)["loss"])


def test_best_epoch_is_chosen_after_the_kl_warmup():
    from phbook.models.vae import BetaVAE

    x, x_val = 3 * blobs(1500, 0), 3 * blobs(200, 1)

    def vae():
        torch.manual_seed(0)
        return BetaVAE(8, latent_dim=4, beta=10.0, channels=(8, 8), kl_warmup=3)

    kw = dict(x_val=x_val, batch_size=32, lr=1e-2, seed=0)
    model = vae()
    hist = train.fit(model, x, epochs=6, **kw)
    # the demonstration the fix is about: the lowest validation loss of all is epoch 1,
    # trained with KL weight 0 (the old rule restored that unpenalised network)
    assert hist["val_loss"].idxmin() == 0
    assert hist["train_kl_weight"].iloc[0] == 0.0
    best = hist.attrs["best_epoch"]
    assert best is not None and best > 3  # an epoch trained with the full KL weight
    row = hist[hist["epoch"] == best].iloc[0]
    assert row["train_kl_weight"] == pytest.approx(model.beta)
    assert row["val_loss"] == hist[hist["epoch"] > 3]["val_loss"].min()
    # the restored weights are that epoch's: a rerun stopped there gives them exactly
    again = vae()
    train.fit(again, x, epochs=best, restore_best=False, **kw)
    assert same_weights(model, again)
    assert full_objective(model, x_val) == pytest.approx(full_objective(again, x_val))


def test_training_that_ends_inside_the_schedule_keeps_the_final_weights(tmp_path):
    from phbook.models.vae import BetaVAE

    x, x_val = blobs(200, 0), blobs(100, 1)
    torch.manual_seed(0)
    model = BetaVAE(8, latent_dim=4, beta=4.0, channels=(8, 8), kl_warmup=10)
    path = tmp_path / "warm.pt"
    hist = train.fit(
        model, x, x_val=x_val, epochs=3, batch_size=32, lr=3e-3, checkpoint=path
    )
    assert hist.attrs["best_epoch"] is None
    final = train.load_checkpoint(path)["model"]
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    # loading the finished checkpoint gives the same answer
    again = BetaVAE(8, latent_dim=4, beta=4.0, channels=(8, 8), kl_warmup=10)
    hist2 = train.fit(
        again, x, x_val=x_val, epochs=3, batch_size=32, lr=3e-3, checkpoint=path
    )
    assert hist2.attrs["best_epoch"] is None and same_weights(model, again)


def test_logged_loss_weights_restart_the_best_epoch_search():
    """A model that declares no schedule but logs a changing ``*_weight`` term."""

    class Penalised(TinyAE):
        def __init__(self):
            super().__init__()
            self.w = 0.0

        def on_epoch_start(self, state):
            self.w = min(1.0, state.epoch / 3)

        def loss(self, x):
            terms = super().loss(x)
            pen = sum(p.abs().sum() for p in self.parameters())
            terms["loss"] = terms["loss"] + self.w * 0.05 * pen
            terms["pen_weight"] = torch.tensor(self.w)
            return terms

    torch.manual_seed(0)
    model = Penalised()
    hist = train.fit(model, data(), x_val=data(100, 1), epochs=6, batch_size=32)
    assert hist["val_loss"].idxmin() < 3  # the unpenalised epochs look best
    assert hist.attrs["best_epoch"] >= 4  # but the weight reached 1 at epoch 4
    # an explicit schedule longer than the run: final weights
    torch.manual_seed(0)
    hist = train.fit(
        Penalised(),
        data(),
        x_val=data(100, 1),
        epochs=4,
        batch_size=32,
        schedule_epochs=5,
    )
    assert hist.attrs["best_epoch"] is None


# ------------------------------------------------------------------------ threads


@pytest.fixture
def restore_threads():
    from phbook import config

    before, chosen = torch.get_num_threads(), config._threads_in_use
    yield config
    torch.set_num_threads(before)
    config._threads_in_use = chosen


def test_threads_default_override_and_errors(restore_threads, monkeypatch):
    import phbook

    config = restore_threads
    monkeypatch.delenv("PHBOOK_THREADS", raising=False)
    assert config.threads() == 1
    monkeypatch.setenv("PHBOOK_THREADS", "3")
    assert config.threads() == 3 and config.threads(2) == 2
    session = phbook.setup(seed=0, quiet=True)
    assert session.threads == 3 and torch.get_num_threads() == 3
    session = phbook.setup(seed=0, threads=2, quiet=True)
    assert (
        session.threads == 2
        and torch.get_num_threads() == 2
        and "2 CPU threads" in str(session)
    )
    monkeypatch.setenv("PHBOOK_THREADS", "many")
    with pytest.raises(config.ConfigError, match="PHBOOK_THREADS"):
        config.threads()
    with pytest.raises(config.ConfigError, match="at least 1"):
        config.threads(0)


def test_fit_chooses_one_thread_when_nothing_chose(restore_threads, monkeypatch):
    config = restore_threads
    monkeypatch.delenv("PHBOOK_THREADS", raising=False)
    torch.set_num_threads(2)
    config._threads_in_use = None
    train.fit(make_model(), data(64), epochs=1, batch_size=32, device="cpu")
    assert torch.get_num_threads() == 1 and config.threads_chosen()
    # a choice made before is kept
    config.use_threads(2)
    train.fit(make_model(), data(64), epochs=1, batch_size=32, device="cpu")
    assert torch.get_num_threads() == 2


def test_an_old_checkpoint_with_a_best_epoch_inside_the_warmup_is_not_restored(tmp_path):
    """Checkpoints written before the rule stored the warm-up's epoch 1 as the best."""
    from phbook.models.vae import BetaVAE

    x, x_val = blobs(200, 0), blobs(100, 1)
    path = tmp_path / "old.pt"

    def vae():
        torch.manual_seed(0)
        return BetaVAE(8, latent_dim=4, beta=4.0, channels=(8, 8), kl_warmup=2)

    kw = dict(x_val=x_val, epochs=3, batch_size=32, lr=3e-3, checkpoint=path)
    model = vae()
    train.fit(model, x, **kw)
    ckpt = torch.load(path, weights_only=True)
    stale = {k: torch.zeros_like(v) for k, v in ckpt["model"].items()}
    ckpt["best"] = {"value": -1.0, "epoch": 1, "state": stale, "bad_epochs": 0}
    torch.save(ckpt, path)
    again = vae()
    hist = train.fit(again, x, **kw)
    assert hist.attrs["best_epoch"] is None
    assert same_weights(model, again)  # the final weights, not the stale "best"
