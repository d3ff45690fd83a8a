"""Chapter 11's experiment: the CHASE study of Huijse et al. (2018), then the book's rows.

Huijse, Astorga, Estevez & Pignata (ESANN 2018) compressed 21 x 21 difference-image
stamps of the CHASE survey, scaled to [-1, 1], to 21 latent numbers with four methods
fitted on unlabelled candidates (train, validation and test sets of equal size):

* ``SCAE``: a sparse convolutional autoencoder (:class:`phbook.models.ae.ChaseSCAE`);
* ``CVAE``: a convolutional VAE of the same architecture with KL annealing
  (:class:`phbook.models.vae.ChaseCVAE`);
* ``IncrementalPCA`` and ``SDL`` (online sparse dictionary learning).

Both networks minimise the squared error with NAdam on mini-batches of 128, for up to
500 epochs with early stopping on the validation set. Two evaluations:

1. **DNMSE** (:func:`dnmse_curve`): the candidates of the test set ranked by their
   latent distance to a set of real transients (the paper: 315 asteroids), and for
   each the normalised squared error to the real transients in pixel space, plotted
   against the rank. Lower at the top ranks: the latent neighbours of the transients
   really look like transients.
2. **MLP** (:func:`latent_classifier`): a one-hidden-layer perceptron on the codes,
   trained on 15,000 and tested on 5,000 labelled stamps; ROC curve and area.

:func:`run_study` runs both for the paper's four methods (:data:`PAPER_METHODS`) and
the book's additional rows (:data:`BOOK_METHODS`), kept apart in every table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import detectors, latent, train
from ..models.ae import ChaseSCAE
from ..models.vae import ChaseCVAE, active_units
from ..sim import transients

__all__ = [
    "LATENT_DIM",
    "PAPER_METHODS",
    "NONLINEAR_METHODS",
    "BOOK_METHODS",
    "BOOK_BETA",
    "chase_sets",
    "train_networks",
    "latent_rank",
    "nmse_to_set",
    "dnmse_curve",
    "latent_classifier",
    "ChaseResult",
    "run_study",
    "ROW_LABELS",
]

#: The latent size of every method (the paper's 21).
LATENT_DIM = 21
#: The paper's four methods, in the order of its figures.
PAPER_METHODS = ("SCAE", "CVAE", "IncrementalPCA", "SDL")
#: The nonlinear ones (the paper's claim: they beat the linear ones).
NONLINEAR_METHODS = ("SCAE", "CVAE")
#: The book's rows beyond the paper: the CVAE without KL annealing (the collapse the
#: paper's Fig. 2d warns of) and a beta-VAE of the same architecture whose KL term is
#: down-weighted (chapter 3's beta), which trades prior matching for detail.
BOOK_METHODS = ("CVAE, no annealing", "beta-CVAE (book)")
#: The KL weight of the book's beta-CVAE (the CVAE's is 1).
BOOK_BETA = 0.05
#: What the ``method from`` column of :meth:`ChaseResult.table` says for each kind of
#: row: every row is our run on simulated stamps, none is a number from the paper.
ROW_LABELS = {"paper": "paper's method (our run)", "book": "book's variant"}


def chase_sets(
    n_candidates: int,
    n_reals: int,
    n_mlp_train: int,
    n_mlp_test: int,
    seed: int = 0,
) -> dict:
    """The simulated sets of the study (:mod:`phbook.sim.transients`), cached on disk.

    ``"train"``, ``"val"``, ``"test"``: three equal sets of ``n_candidates`` unlabelled
    candidates (the simulator's default mix: 80% artifacts, 20% real transients);
    ``"reals"``: ``n_reals`` simulated asteroids, the real-transient set of the DNMSE
    (the paper's 315 asteroids); ``"mlp_train"``, ``"mlp_test"``: labelled candidates
    of the default mix for the classifier.
    """
    pool = transients.load_or_simulate(3 * n_candidates, seed=seed + 1, progress=False)
    thirds = {
        name: pool.subset(np.arange(i * n_candidates, (i + 1) * n_candidates))
        for i, name in enumerate(("train", "val", "test"))
    }
    reals = transients.load_or_simulate(
        n_reals, seed=seed + 2, fractions={"asteroid": 1}, progress=False
    )
    labelled = transients.load_or_simulate(
        n_mlp_train + n_mlp_test, seed=seed + 3, progress=False
    )
    return {
        **thirds,
        "reals": reals,
        "mlp_train": labelled.subset(np.arange(n_mlp_train)),
        "mlp_test": labelled.subset(np.arange(n_mlp_train, n_mlp_train + n_mlp_test)),
    }


def train_networks(
    x_train,
    x_val,
    *,
    max_epochs: int = 500,
    patience: int = 10,
    kl_warmup: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    name: str | None = "ch11",
    seed: int = 0,
    methods=("SCAE", "CVAE") + BOOK_METHODS,
) -> dict:
    """Train the study's networks with early stopping on ``x_val``.

    Returns ``method -> (model, history)``. ``name`` prefixes the checkpoint names
    (:func:`phbook.train.load_or_train`; ``None``: train without a checkpoint).
    """
    builders = {
        "SCAE": lambda: ChaseSCAE(),
        "CVAE": lambda: ChaseCVAE(kl_warmup=kl_warmup),
        "CVAE, no annealing": lambda: ChaseCVAE(kl_warmup=0),
        "beta-CVAE (book)": lambda: ChaseCVAE(kl_warmup=kl_warmup, beta=BOOK_BETA),
    }
    unknown = set(methods) - set(builders)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {list(builders)}")
    fit_kwargs = dict(
        x_val=x_val,
        epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=False,
    )
    out = {}
    for m in methods:
        model = builders[m]()
        if name is None:
            history = train.fit(model, x_train, **fit_kwargs)
            model.eval()
        else:
            tag = m.lower().replace(",", "").replace(" ", "-").replace("(", "")
            tag = tag.replace(")", "")
            model, history = train.load_or_train(
                f"{name}-{tag}", model, x_train, **fit_kwargs
            )
        out[m] = (model, history)
    return out


def _flat(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty stack of images, got {arr.shape}")
    return arr.reshape(len(arr), -1)


def _codes(z, name: str) -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError(
            f"{name} must be a non-empty (N, latent_dim) array, got {arr.shape}"
        )
    return arr


def latent_rank(z_candidates, z_reals) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ordered by their latent distance to the set of real transients.

    The distance of a candidate to the set is the Euclidean distance of its code to
    the *nearest* real transient's code. Returns ``(order, distance)``: ``order[0]`` is
    the index of the candidate nearest to the set, ``distance`` is per candidate.
    """
    from sklearn.neighbors import NearestNeighbors

    zc, zr = _codes(z_candidates, "z_candidates"), _codes(z_reals, "z_reals")
    if zc.shape[1] != zr.shape[1]:
        raise ValueError(f"latent sizes differ: {zc.shape[1]} and {zr.shape[1]}")
    dist = NearestNeighbors(n_neighbors=1).fit(zr).kneighbors(zc)[0][:, 0]
    return np.argsort(dist, kind="stable"), dist


def nmse_to_set(x_candidates, x_reals, chunk: int = 2048) -> np.ndarray:
    """Per candidate, the normalised squared error to the set of real transients.

    ``NMSE(c) = min_r ||x_c - x_r||^2 / ||x_r||^2`` over the real transients ``r``, in
    pixel space: 0 for a candidate identical to a real transient, about 1 for an empty
    stamp, 2 for a real transient turned upside down.
    """
    xc, xr = _flat(x_candidates, "x_candidates"), _flat(x_reals, "x_reals")
    if xc.shape[1] != xr.shape[1]:
        raise ValueError(f"image sizes differ: {xc.shape[1]} and {xr.shape[1]} pixels")
    norm = (xr**2).sum(axis=1)
    if (norm <= 0).any():
        raise ValueError("x_reals holds an all-zero image: its NMSE is undefined")
    out = np.empty(len(xc))
    for s in range(0, len(xc), chunk):
        c = xc[s : s + chunk]
        d2 = (c**2).sum(1)[:, None] + norm[None, :] - 2 * c @ xr.T
        out[s : s + chunk] = (np.maximum(d2, 0) / norm[None, :]).min(axis=1)
    return out


def dnmse_curve(x_candidates, z_candidates, x_reals, z_reals) -> np.ndarray:
    """The DNMSE curve: :func:`nmse_to_set` of the candidates in the order of
    :func:`latent_rank` (entry ``i`` is the candidate of latent rank ``i + 1``).

    Its mean over the first ``n`` entries is the DNMSE of the top ``n``; any ordering
    of the candidates has the same overall mean, so a code is better the lower its
    curve starts.
    """
    xc = _flat(x_candidates, "x_candidates")
    if len(xc) != len(_codes(z_candidates, "z_candidates")):
        raise ValueError("x_candidates and z_candidates differ in number")
    if len(_flat(x_reals, "x_reals")) != len(_codes(z_reals, "z_reals")):
        raise ValueError("x_reals and z_reals differ in number")
    order, _ = latent_rank(z_candidates, z_reals)
    return nmse_to_set(xc, x_reals)[order]


def latent_classifier(hidden: int = 32, seed: int = 0):
    """An MLP with one hidden layer on standardised latent codes (a scikit-learn
    pipeline), the supervised read-out of the study."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(hidden,),
            alpha=1e-3,
            max_iter=1000,
            early_stopping=True,
            random_state=seed,
        ),
    )


@dataclass
class ChaseResult:
    """What :func:`run_study` computed, per method (paper's and book's rows)."""

    models: dict  # method -> fitted model or detector
    histories: dict  # network method -> training history (DataFrame)
    codes: dict  # method -> {"test", "reals", "mlp_train", "mlp_test"}
    curves: dict  # method -> DNMSE curve (NMSE by latent rank)
    auc: dict  # method -> MLP ROC-AUC on the labelled test stamps
    roc: dict  # method -> (fpr, tpr)
    active: dict  # network method -> active latent units of the test codes
    nmse_mean: float  # the mean NMSE of all test candidates (any ordering's mean)
    top: int
    paper_methods: tuple = PAPER_METHODS
    book_methods: tuple = field(default_factory=tuple)
    max_epochs: int | None = None  # the epoch cap the networks trained under

    def stopping(self) -> pd.DataFrame:
        """Per network: the epochs trained, the cap, whether early stopping ended the
        training before the cap, and the epoch whose weights were kept (``best
        epoch``; the last one when the validation loss was still falling)."""
        rows = {}
        for m, h in self.histories.items():
            n = len(h)
            best = h.attrs.get("best_epoch")
            rows[m] = {
                "epochs trained": n,
                "epoch cap": self.max_epochs,
                "stopped early": bool(self.max_epochs is not None and n < self.max_epochs),
                "best epoch": n if best is None else int(best),
            }
        return pd.DataFrame(rows).T

    def dnmse_top(self, n: int | None = None) -> dict:
        """Method -> mean DNMSE of the ``n`` (default ``top``) latent-nearest candidates."""
        n = self.top if n is None else int(n)
        return {m: float(c[:n].mean()) for m, c in self.curves.items()}

    def table(self, labels: bool = False) -> pd.DataFrame:
        """One row per method: whose row it is, DNMSE of the top ranks, MLP ROC-AUC.

        ``labels=True`` names the first column ``method from`` with the words of
        :data:`ROW_LABELS` (for readers); the default keeps ``row`` = paper / book."""
        top = self.dnmse_top()
        rows = {
            m: {
                "row": "paper" if m in self.paper_methods else "book",
                f"DNMSE top {self.top}": top[m],
                "MLP ROC-AUC": self.auc[m],
                "active units": self.active.get(m, np.nan),
            }
            for m in (*self.paper_methods, *self.book_methods)
        }
        out = pd.DataFrame.from_dict(rows, orient="index")  # numbers stay numeric
        if labels:
            out["row"] = out["row"].map(ROW_LABELS)
            out = out.rename(columns={"row": "method from"})
        return out

    def nonlinear_beats_linear(self) -> dict:
        """Whether the best nonlinear paper method beats both linear ones, per test."""
        lin = [m for m in self.paper_methods if m not in NONLINEAR_METHODS]
        top = self.dnmse_top()
        return {
            "dnmse": min(top[m] for m in NONLINEAR_METHODS) < min(top[m] for m in lin),
            "mlp": max(self.auc[m] for m in NONLINEAR_METHODS)
            > max(self.auc[m] for m in lin),
        }


def run_study(
    sets: dict,
    *,
    max_epochs: int = 500,
    patience: int = 10,
    kl_warmup: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    dict_epochs: int = 5,
    n_nonzero: int = 5,
    hidden: int = 32,
    top: int = 100,
    book_rows: bool = True,
    name: str | None = "ch11",
    seed: int = 0,
) -> ChaseResult:
    """The whole study on the sets of :func:`chase_sets` (stamps scaled to [-1, 1]).

    Fits every method on ``sets["train"]`` (the networks stop early on
    ``sets["val"]``), encodes the test candidates, the real transients and the
    labelled stamps, and computes both evaluations. ``book_rows=False`` runs the
    paper's four methods only.
    """
    from sklearn import metrics as skm

    x_train = sets["train"].images
    nets = ("SCAE", "CVAE") + (BOOK_METHODS if book_rows else ())
    trained = train_networks(
        x_train,
        sets["val"].images,
        max_epochs=max_epochs,
        patience=patience,
        kl_warmup=kl_warmup,
        batch_size=batch_size,
        lr=lr,
        name=name,
        seed=seed,
        methods=nets,
    )
    models = {m: mh[0] for m, mh in trained.items()}
    histories = {m: mh[1] for m, mh in trained.items()}
    models["IncrementalPCA"] = detectors.IncrementalPCADetector(
        n_components=LATENT_DIM, batch_size=max(batch_size, 4 * LATENT_DIM)
    ).fit(x_train)
    models["SDL"] = detectors.DictionaryLearningDetector(
        n_components=LATENT_DIM,
        n_nonzero=n_nonzero,
        alpha=1.0,
        batch_size=batch_size,
        max_iter=dict_epochs,
        random_state=seed,
    ).fit(x_train)

    def code(m, x):
        mod = models[m]
        if hasattr(mod, "transform"):
            return np.asarray(mod.transform(x), dtype=np.float64)
        return latent.encode(mod, x).astype(np.float64)

    names = ("test", "reals", "mlp_train", "mlp_test")
    codes, curves, auc, roc, active = {}, {}, {}, {}, {}
    nmse = nmse_to_set(sets["test"].images, sets["reals"].images)
    y_fit = np.asarray(sets["mlp_train"].labels).astype(int)
    y_test = np.asarray(sets["mlp_test"].labels).astype(int)
    for m in (*PAPER_METHODS, *(BOOK_METHODS if book_rows else ())):
        codes[m] = {s: code(m, sets[s].images) for s in names}
        order, _ = latent_rank(codes[m]["test"], codes[m]["reals"])
        curves[m] = nmse[order]
        clf = latent_classifier(hidden, seed).fit(codes[m]["mlp_train"], y_fit)
        p = clf.predict_proba(codes[m]["mlp_test"])[:, 1]
        auc[m] = float(skm.roc_auc_score(y_test, p))
        fpr, tpr, _ = skm.roc_curve(y_test, p)
        roc[m] = (fpr, tpr)
        if m in histories and "CVAE" in m:
            active[m] = active_units(codes[m]["test"])
    return ChaseResult(
        models=models,
        histories=histories,
        codes=codes,
        curves=curves,
        auc=auc,
        roc=roc,
        active=active,
        nmse_mean=float(nmse.mean()),
        top=int(top),
        book_methods=BOOK_METHODS if book_rows else (),
        max_epochs=int(max_epochs),
    )
