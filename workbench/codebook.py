"""Codebook analysis of a discrete bottleneck (or of a post-hoc codebook from k-means).

``analyze`` takes the codes a model chose at every loop step and reports, per step:
how many codes are used, the perplexity (effective number of codes, exp of the entropy)
and the dead codes; how the decoded code compares with the true value (accuracy,
confusion, normalised mutual information) by step and by a grouping such as graph depth;
the geometry of the code embeddings (PCA, and the Fourier spectrum over Z_p when the
codes are residues); for continuous latents, the distance of each step's latent from the
nearest codebook embedding (anchored vs drifting); and, given a callable, the one-step
error-correction rate::

    >>> rep = analyze(codes, truth=values, depth=depth, embeddings=E, modulus=23)
    >>> rep.df                       # one row per step: used, dead, perplexity, accuracy, nmi
    >>> rep.figure(which="accuracy") # depth x step heatmap
    >>> rep.tables["confusion"]      # step, truth, code, count

Models without a discrete bottleneck get the same report from ``analyze_states``, which
fits k-means (scikit-learn) to the cached states and treats the cluster index as the code.
Model-specific glue (collecting codes from a rollout, the reasoner's repair rate) lives in
``probes``; this module only sees arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score

from workbench.results import Result

__all__ = ["analyze", "analyze_states", "usage", "perplexity", "nearest", "fourier_spectrum", "kmeans_codebook"]


def perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of a count vector: the effective number of codes in use."""
    p = np.asarray(counts, dtype=float)
    p = p[p > 0] / p.sum()
    return float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0


def usage(codes: np.ndarray, n_codes: int) -> pd.DataFrame:
    """Per step: codes used, dead codes, perplexity, entropy (bits). ``codes``: [T, n] ints."""
    rows = []
    for t, c in enumerate(codes):
        counts = np.bincount(c, minlength=n_codes)
        pp = perplexity(counts)
        rows.append({"step": t, "n": len(c), "used": int((counts > 0).sum()), "dead": int((counts == 0).sum()),
                     "perplexity": pp, "entropy_bits": float(np.log2(pp)) if pp > 0 else 0.0})
    return pd.DataFrame(rows)


def fourier_spectrum(embeddings: np.ndarray, modulus: int) -> pd.DataFrame:
    """Share of the (non-constant) power of the embeddings of 0..p-1 at each frequency k.

    The DFT runs along the residue axis: a representation built from cos/sin(2 pi k v / p)
    puts its power on a few frequencies k; a generic one spreads it evenly.
    """
    E = np.asarray(embeddings[:modulus], dtype=float)
    F = np.fft.fft(E - E.mean(0), axis=0)
    power = (np.abs(F) ** 2).sum(1)
    ks = np.arange(1, modulus // 2 + 1)
    share = np.array([power[k] + (power[modulus - k] if modulus - k != k else 0) for k in ks])
    share = share / share.sum() if share.sum() > 0 else share
    return pd.DataFrame({"frequency": ks, "power": share})


def nearest(latents: torch.Tensor | np.ndarray, embeddings: torch.Tensor | np.ndarray, chunk: int = 65536):
    """Distance to and index of the nearest embedding: latents [..., d], embeddings [K, d]."""
    h = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    flat = h.reshape(-1, h.shape[-1])
    dist, idx = [], []
    for i in range(0, len(flat), chunk):
        d = torch.cdist(flat[i: i + chunk], e)
        m = d.min(1)
        dist.append(m.values)
        idx.append(m.indices)
    return torch.cat(dist).reshape(h.shape[:-1]).numpy(), torch.cat(idx).reshape(h.shape[:-1]).numpy()


def kmeans_codebook(states: np.ndarray, k: int, seed: int = 0, max_fit: int = 20000):
    """A post-hoc codebook: k-means centres of ``states`` [n, d] -> (codes [n], centres [k, d])."""
    X = np.asarray(states, dtype=np.float32)
    if len(X) < k:
        raise ValueError(f"k={k} clusters need at least {k} states; got {len(X)}")
    rng = np.random.default_rng(seed)
    fit = X[rng.choice(len(X), max_fit, replace=False)] if len(X) > max_fit else X
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(fit)
    return km.predict(X), km.cluster_centers_


def analyze(
    codes,
    *,
    n_codes: int | None = None,
    truth=None,
    depth=None,
    embeddings=None,
    labels: Sequence[str] | None = None,
    modulus: int | None = None,
    latents=None,
    repair: Callable[[], dict] | None = None,
    match: str = "identity",
) -> Result:
    """The codebook report.

    Args:
        codes: [T, n] ints, the code chosen at each of T steps for n slots ([n]: one step).
        n_codes: size of the codebook (default: ``len(embeddings)`` or max code + 1).
        truth: [n] or [T, n] true value of each slot (per step: e.g. the exact algorithm's
            state after that step).
        depth: [n] a grouping for the accuracy table (e.g. each node's graph depth).
        embeddings: [K, d] code embeddings: PCA and, with ``modulus``, the Fourier spectrum.
        labels: K names for the codes in the PCA table (default: their indices).
        modulus: p; codes 0..p-1 are residues of Z_p.
        latents: [T, n, d] continuous states: distance to the nearest embedding per step.
        repair: ``fn() -> dict`` measuring error correction (stored in ``meta["repair"]``).
        match: "identity" (code c means value c) or "majority" (each code stands for the
            value it most often co-occurs with; for post-hoc k-means codebooks).

    Returns:
        ``Result`` (kind "codebook"): ``df`` one row per step; ``tables`` usage, accuracy,
        confusion, pca, fourier, drift (those the inputs allow).
    """
    codes = _ints(codes, "codes")
    if codes.ndim == 1:
        codes = codes[None]
    if codes.ndim != 2:
        raise ValueError(f"codes must be [steps, n] integers; got shape {list(codes.shape)}")
    T, n = codes.shape
    if match not in ("identity", "majority"):
        raise ValueError(f"match={match!r}; allowed: 'identity', 'majority'")
    if n_codes is None:
        n_codes = len(embeddings) if embeddings is not None else int(codes.max()) + 1
    if codes.min() < 0 or codes.max() >= n_codes:
        raise ValueError(f"codes lie in {codes.min()}..{codes.max()}; allowed 0..{n_codes - 1} (n_codes={n_codes})")
    df = usage(codes, n_codes)
    counts = [np.bincount(c, minlength=n_codes) for c in codes]
    tables = {"usage": pd.DataFrame([{"step": t, "code": c, "count": int(k), "frac": k / n}
                                     for t in range(T) for c, k in enumerate(counts[t])])}
    meta: dict = {"n_codes": n_codes, "steps": T, "n": n}

    if truth is not None:
        truth = _ints(truth, "truth")
        if truth.shape not in ((n,), (T, n)):
            raise ValueError(f"truth must be [n] or [steps, n] = {list(codes.shape)}; got {list(truth.shape)}")
        truth = np.broadcast_to(truth, codes.shape)
        if truth.shape != codes.shape:
            raise ValueError(f"truth must be [n] or [steps, n] = {list(codes.shape)}; got {list(truth.shape)}")
        decoded = codes if match == "identity" else _majority(codes, truth)
        right = decoded == truth
        df["accuracy"] = right.mean(1)
        df["nmi"] = [normalized_mutual_info_score(truth[t], codes[t]) for t in range(T)]
        conf = []
        for t in range(T):
            pairs, k = np.unique(np.stack([truth[t], codes[t]], 1), axis=0, return_counts=True)
            conf += [{"step": t, "truth": int(a), "code": int(b), "count": int(c)} for (a, b), c in zip(pairs, k)]
        tables["confusion"] = pd.DataFrame(conf)
        if depth is not None:
            depth = _ints(depth, "depth")
            if depth.shape != (n,):
                raise ValueError(f"depth must be [n] = [{n}]; got {list(depth.shape)}")
            tables["accuracy"] = pd.DataFrame([{"step": t, "depth": int(d), "accuracy": float(right[t, depth == d].mean()),
                                                "n": int((depth == d).sum())}
                                               for t in range(T) for d in np.unique(depth)])
        else:  # no grouping given: one row per step, so the accuracy view still exists
            tables["accuracy"] = pd.DataFrame([{"step": t, "depth": "all", "accuracy": float(right[t].mean()), "n": n}
                                               for t in range(T)])
    if embeddings is not None:
        E = np.asarray(embeddings.detach().cpu() if torch.is_tensor(embeddings) else embeddings, dtype=float)
        if E.ndim != 2 or len(E) != n_codes:
            raise ValueError(f"embeddings must be [n_codes, d] = [{n_codes}, d]; got {list(E.shape)}")
        k = min(3, *E.shape)
        pca = PCA(n_components=k).fit(E)
        Z = pca.transform(E)
        names = list(labels) if labels is not None else list(range(n_codes))
        if len(names) != n_codes:
            raise ValueError(f"labels has {len(names)} names for {n_codes} codes")
        tables["pca"] = pd.DataFrame({"code": names, **{f"pc{i + 1}": Z[:, i] for i in range(k)}})
        meta["pca_explained"] = [float(v) for v in pca.explained_variance_ratio_]
        if modulus is not None:
            if not 2 <= modulus <= n_codes:
                raise ValueError(f"modulus={modulus} must be in 2..n_codes={n_codes}")
            tables["fourier"] = fourier_spectrum(E, modulus)
        if latents is not None:
            H = np.asarray(latents.detach().cpu() if torch.is_tensor(latents) else latents, dtype=np.float32)
            if H.shape[:2] != (T, n) or H.shape[-1] != E.shape[1]:
                raise ValueError(f"latents must be [steps, n, d] = [{T}, {n}, {E.shape[1]}]; got {list(H.shape)}")
            dist, _ = nearest(H, E)
            scale = float(np.linalg.norm(E, axis=1).mean())
            df["distance"] = dist.mean(1)
            df["relative_distance"] = df["distance"] / scale
            tables["drift"] = df[["step", "distance", "relative_distance"]].copy()
    elif latents is not None:
        raise ValueError("latents need embeddings to measure the distance to the nearest one")
    if repair is not None:
        meta["repair"] = dict(repair())
    return Result("codebook", df, "perplexity", meta, tables)


def analyze_states(states, k: int, *, truth=None, depth=None, seed: int = 0, repair=None) -> Result:
    """The codebook report for a model without a discrete bottleneck.

    ``states`` [T, n, d] (e.g. an RNN's state after each step for n samples) are
    clustered with k-means over all steps; the cluster index is the code, the centres the
    embeddings, and each code stands for the value it most often co-occurs with.
    """
    H = np.asarray(states.detach().cpu() if torch.is_tensor(states) else states, dtype=np.float32)
    if H.ndim != 3:
        raise ValueError(f"states must be [steps, n, d]; got shape {list(H.shape)}")
    T, n, d = H.shape
    codes, centres = kmeans_codebook(H.reshape(T * n, d), k, seed)
    rep = analyze(codes.reshape(T, n), n_codes=k, truth=truth, depth=depth, embeddings=centres, latents=H,
                  repair=repair, match="majority")
    rep.meta["codebook"] = f"k-means, k={k}, seed={seed}"
    return rep


def _majority(codes: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Map each code to the truth value it co-occurs with most often (over all steps)."""
    out = np.empty_like(codes)
    for c in np.unique(codes):
        sel = codes == c
        vals, k = np.unique(truth[sel], return_counts=True)
        out[sel] = vals[k.argmax()]
    return out


def _ints(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x)
    if a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers; got dtype {a.dtype}")
    return a.astype(np.int64)
