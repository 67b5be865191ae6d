"""Deep features beside tabular columns: backbone features of text / image / audio columns, then gradient boosting.

:class:`TabularModel` reads a table (a pandas DataFrame), turns each media or text column into
backbone features (through the feature cache; a PCA fitted on the training rows brings each to
``dim`` columns), puts them beside the numeric columns and the categorical columns (which reach
the booster as categories, not codes), and fits a gradient-boosted model: LightGBM by default,
XGBoost when installed, or scikit-learn's HistGradientBoosting; for regression (targets in
their own units) or classification, with early stopping on a held-out part of the training rows.

It saves without pickle: the booster in its native format (LightGBM text, XGBoost JSON), the
PCA matrices as safetensors, the column spec, backbone references and categories as JSON; a
loaded model predicts exactly what the saved one did.

>>> model = TabularModel("regression", text_columns=["description"], numeric_columns=["rooms"],
...                      categorical_columns=["city"]).fit(train, train["price"])  # doctest: +SKIP
>>> model.save("out/tabular"); TabularModel.load("out/tabular").predict(test)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtransfer.builtins import PREFIX, TABLES
from mtransfer.media import resolve_relative_paths

FORMAT = 1
BOOSTERS = ("lightgbm", "xgboost", "hist")
TASKS = ("regression", "classification")
# the head tasks (mtransfer.tasks) of these names: the one place the two vocabularies meet; either name is accepted
HEAD_TASKS = {"regression": "regression", "classification": "single_label_classification"}
DEFAULT_MODELS = {"text": ("sentence", "builtin:minilm"), "image": ("image", None), "audio": ("audio", None)}


class TabularModel:
    """Gradient boosting on numeric + categorical columns and backbone features of text / media columns.

    Args:
        task: ``regression`` or ``classification``.
        text_columns / image_columns / audio_columns: Columns whose values are texts, image paths, audio paths.
        numeric_columns: Numeric columns (missing values allowed: the booster routes them).
        categorical_columns: Columns the booster treats as categories.
        text_model / image_model / audio_model: ``(modality, model)`` of the backbone for that kind
            (text default: the ``sentence`` adapter on ``builtin:minilm``).
        dim: Columns per media column after PCA (None: every feature).
        booster: ``lightgbm`` (default), ``xgboost`` or ``hist``.
        n_estimators, learning_rate: Boosting rounds (an upper bound) and shrinkage.
        booster_params: The booster's own settings by its own names (LightGBM: ``num_leaves``,
            ``min_data_in_leaf`` or any alias; XGBoost / ``hist``: their scikit-learn parameters),
            checked against the booster's parameter names; they override the defaults and the search.
        search: With no ``booster_params``, try a small grid of the booster's main settings
            (:data:`SEARCH_GRIDS`: tree size, leaf size, learning rate), each scored by a 3-fold
            cross-validation of the training rows (early stopping on each held-out part), and fit
            the best; the choice is saved with the model and in ``chosen_params``, every score in
            ``search_scores``. False: the fixed defaults (LightGBM 31 leaves, 5 rows per leaf).
        num_threads: Threads the booster uses (None: the booster's default, every core).
        early_stopping_rounds: Rounds without a better validation score before stopping; the
            validation part is ``validation_fraction`` of the training rows.
        cache_dir: Feature-cache folder. seed: Split, PCA and booster seed.
    """

    def __init__(self, task: str = "regression", *, text_columns: Sequence[str] = (), image_columns: Sequence[str] = (),
                 audio_columns: Sequence[str] = (), numeric_columns: Sequence[str] = (),
                 categorical_columns: Sequence[str] = (), text_model: tuple[str, str] | None = None,
                 image_model: tuple[str, str] | None = None, audio_model: tuple[str, str] | None = None,
                 dim: int | None = 32, booster: str = "lightgbm", n_estimators: int = 2000, learning_rate: float = 0.05,
                 early_stopping_rounds: int = 50, validation_fraction: float = 0.15, cache_dir: str | None = None,
                 seed: int = 0, progress: bool = True, target: str | None = None,
                 booster_params: dict[str, Any] | None = None, search: bool = True,
                 num_threads: int | None = None) -> None:
        task = {head: own for own, head in HEAD_TASKS.items()}.get(task, task)  # single_label_classification too
        if task not in TASKS:
            raise ValueError(f"TabularModel task={task!r}; expected one of {', '.join(TASKS)} (or "
                             f"{HEAD_TASKS['classification']}).")
        if booster not in BOOSTERS:
            raise ValueError(f"TabularModel booster={booster!r}; expected one of {', '.join(BOOSTERS)}.")
        if not 0 < validation_fraction < 0.5:
            raise ValueError(f"validation_fraction={validation_fraction!r}: expected a fraction in (0, 0.5).")
        self.task, self.booster, self.dim = task, booster, dim
        self.media = {"text": list(text_columns), "image": list(image_columns), "audio": list(audio_columns)}
        self.backbones = {"text": tuple(text_model or DEFAULT_MODELS["text"]),
                          "image": tuple(image_model) if image_model else None,
                          "audio": tuple(audio_model) if audio_model else None}
        for kind in ("image", "audio"):
            if self.media[kind] and self.backbones[kind] is None:
                raise ValueError(f"{kind}_columns need {kind}_model=(modality, model), e.g. ('image', 'google/vit-base-patch16-224').")
        self.numeric, self.categorical = list(numeric_columns), list(categorical_columns)
        if not (self.numeric or self.categorical or any(self.media.values())):
            raise ValueError("TabularModel needs at least one column (text, image, audio, numeric or categorical).")
        used = [c for cols in (*self.media.values(), self.numeric, self.categorical) for c in cols]
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise ValueError(f"columns given twice: {', '.join(twice)} (each column has one role).")
        self.n_estimators, self.learning_rate = n_estimators, learning_rate
        self.booster_params = check_booster_params(booster, booster_params or {})
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise ValueError(f"TabularModel num_threads={num_threads!r}: expected an integer >= 1 or None.")
        self.search, self.num_threads = search, num_threads
        self.chosen_params: dict[str, Any] = {}
        self.search_scores: list[dict[str, Any]] = []
        self.early_stopping_rounds, self.validation_fraction = early_stopping_rounds, validation_fraction
        self.cache_dir, self.seed, self.progress = cache_dir, seed, progress
        self.target = target  # the target column's name, when known (saved; evaluate reads it)
        self.categories: dict[str, list[Any]] = {}
        self.projections: dict[str, dict[str, np.ndarray]] = {}
        self.classes: list[Any] | None = None
        self.timings: dict[str, float] = {}
        self._model: Any = None

    # --- checks -------------------------------------------------------------------------
    def _check(self, frame: Any, where: str, target: Any = None) -> None:
        """Every named column exists; numeric columns hold numbers; the target has no gaps. Before any extraction."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}.")
        wanted = [c for cols in (*self.media.values(), self.numeric, self.categorical) for c in cols]
        absent = [c for c in wanted if c not in frame.columns]
        if absent:
            raise ValueError(f"{where}: no column {', '.join(map(repr, absent))}; the columns are "
                             f"{', '.join(map(str, frame.columns[:20]))}.")
        for col in self._media_columns():
            gaps = np.flatnonzero(frame[col].isna().to_numpy())
            if len(gaps):
                raise ValueError(f"{where}: column {col!r} has {len(gaps)} missing values (rows "
                                 f"{', '.join(str(int(i)) for i in gaps[:5])}); each row needs an input there.")
        for col in self.numeric:
            values = frame[col]
            numbers = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero(numbers.isna().to_numpy() & values.notna().to_numpy())
            if len(bad):
                shown = "; ".join(f"row {int(i)}: {values.iloc[int(i)]!r}" for i in bad[:3])
                raise ValueError(f"{where}: column {col!r} should be numeric; {len(bad)} values are not numbers ({shown}).")
        if target is not None:
            y = pd.Series(target)
            gaps = np.flatnonzero(y.isna().to_numpy())
            if len(gaps):
                raise ValueError(f"{where}: the target has {len(gaps)} missing values (rows "
                                 f"{', '.join(str(int(i)) for i in gaps[:5])}); drop those rows or fill them.")
            if self.task == "regression":
                numbers = pd.to_numeric(y, errors="coerce")
                if numbers.isna().any():
                    i = int(np.flatnonzero(numbers.isna().to_numpy())[0])
                    raise ValueError(f"{where}: a regression target must be numeric; row {i} holds {y.iloc[i]!r}.")
            if len(y) != len(frame):
                raise ValueError(f"{where}: {len(y)} targets for {len(frame)} rows.")

    # --- features -----------------------------------------------------------------------
    def column_features(self, frame: Any, only: Sequence[str] | None = None, *, where: str = "table",
                        process_index: int = 0, num_processes: int = 1, wait: Any = None,
                        device: Any = None) -> dict[str, np.ndarray]:
        """Backbone features (before PCA) of every text / media column of ``frame``, from the feature cache.

        Every column's files are checked before any column is extracted (one error naming each
        unreadable file and its column). Computed once for a whole table, the features serve every
        fold of a cross-validation (``features=``). Under ``accelerate launch``, pass the process
        index, count, ``wait`` and ``device``: each process extracts its share of the shards.
        """
        from mtransfer.sklearn import check_column, column_features

        wanted = [(kind, col) for kind, cols in self.media.items() for col in cols if only is None or col in only]
        cached = {}  # every column checked (or found cached) before any column is extracted
        for kind, col in wanted:
            modality, model = self.backbones[kind]
            cached[col] = check_column(modality, model, frame[col].tolist(), cache_dir=self.cache_dir,
                                       source=f"{where}, column {col!r}")
        out = {}
        for kind, col in wanted:
            if cached[col] is not None:
                out[col] = cached[col].all().numpy()
                continue
            modality, model = self.backbones[kind]
            out[col], _ = column_features(modality, model, frame[col].tolist(), cache_dir=self.cache_dir,
                                          progress=self.progress, process_index=process_index,
                                          num_processes=num_processes, wait=wait, device=device)
        return out

    def _media_features(self, frame: Any, fit: bool, features: dict[str, np.ndarray] | None = None,
                        where: str = "table") -> dict[str, np.ndarray]:
        given = features or {}
        missing = [c for c in self._media_columns() if c not in given]
        computed = self.column_features(frame, only=missing, where=where) if missing else {}
        out = {}
        for kind, columns in self.media.items():
            for col in columns:
                x = given[col] if col in given else computed[col]
                if len(x) != len(frame):
                    raise ValueError(f"features of column {col!r}: {len(x)} rows for a table of {len(frame)}.")
                if fit and self.dim is not None and self.dim < min(x.shape):
                    from sklearn.decomposition import PCA

                    pca = PCA(n_components=self.dim, random_state=self.seed).fit(x)
                    self.projections[col] = {"mean": pca.mean_.astype(np.float32),
                                             "components": pca.components_.astype(np.float32)}
                elif fit:
                    self.projections.pop(col, None)
                if col in self.projections:
                    p = self.projections[col]
                    x = (x - p["mean"]) @ p["components"].T
                out[col] = x.astype(np.float32)
        return out

    def _media_columns(self) -> list[str]:
        return [c for cols in self.media.values() for c in cols]

    def _matrix(self, frame: Any, fit: bool, features: dict[str, np.ndarray] | None = None, where: str = "table") -> Any:
        import pandas as pd

        start = time.perf_counter()
        media = self._media_features(frame, fit, features, where)
        self.timings["features_s"] = time.perf_counter() - start
        parts = {}
        for col in self.numeric:
            parts[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64").to_numpy()
        for col in self.categorical:
            values = frame[col].astype("string")
            if fit:
                self.categories[col] = sorted(values.dropna().unique().tolist())
            # unseen categories become missing; the training categories keep their codes
            parts[col] = pd.Categorical(values, categories=self.categories[col])
        for col, x in media.items():
            for i in range(x.shape[1]):
                parts[f"{col}__f{i}"] = x[:, i]
        return pd.DataFrame(parts, index=range(len(frame)))

    # --- fit / predict ------------------------------------------------------------------
    def fit(self, frame: Any, target: Any, where: str = "training table",
            features: dict[str, np.ndarray] | None = None) -> TabularModel:
        """Fit on ``frame`` (``features``: precomputed :meth:`column_features` of its rows, e.g. one fold's)."""
        import pandas as pd

        name = self.target or (target.name if isinstance(target, pd.Series) and isinstance(target.name, str) else None)
        if name is not None:
            check_target_not_a_feature(name, self.media | {"numeric": self.numeric, "categorical": self.categorical})
            self.target = name
        self._check(frame, where, target)
        y = pd.Series(target).reset_index(drop=True)
        if self.task == "classification":
            self.classes = sorted(y.unique().tolist(), key=str)
            index = {c: i for i, c in enumerate(self.classes)}
            y = y.map(index).to_numpy()
            if len(self.classes) < 2:
                raise ValueError(f"{where}: classification needs at least 2 classes; the target has {len(self.classes)}.")
        else:
            y = pd.to_numeric(y).to_numpy(dtype=np.float64)
        X = self._matrix(frame.reset_index(drop=True), fit=True, features=features, where=where)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(X))
        n_val = max(1, int(round(self.validation_fraction * len(X))))
        val, tr = order[:n_val], order[n_val:]
        start = time.perf_counter()
        self._model = self._fit_booster(X.iloc[tr], y[tr], X.iloc[val], y[val])
        self.timings["fit_s"] = time.perf_counter() - start
        self.columns_ = list(X.columns)
        return self

    def _fit_booster(self, X, y, Xv, yv) -> Any:
        """The booster fitted with the given settings, or (search) the best of the grid on the validation part."""
        if self.booster_params or not self.search:
            self.chosen_params = dict(self.booster_params)
            return self._fit_one(X, y, Xv, yv, self.booster_params)[0]
        import pandas as pd

        # each setting scored by a 3-fold cross-validation of the training rows (one validation part of a small
        # table is too noisy to choose on: the search then picked worse settings than the fixed defaults)
        rows, target = pd.concat([X, Xv]), np.concatenate([y, yv])
        order = np.random.default_rng(self.seed + 1).permutation(len(rows))
        parts = np.array_split(order, SEARCH_FOLDS)
        best = None
        self.search_scores = []
        for params in SEARCH_GRIDS[self.booster]:
            losses = []
            for k in range(SEARCH_FOLDS):
                fit = np.concatenate([parts[j] for j in range(SEARCH_FOLDS) if j != k])
                losses.append(self._fit_one(rows.iloc[fit], target[fit], rows.iloc[parts[k]], target[parts[k]],
                                            params)[1])
            score = float(np.mean(losses))
            self.search_scores.append({**params, "cv_loss": round(score, 6)})
            if best is None or score < best[0]:
                best = (score, params)
        self.chosen_params = dict(best[1])
        return self._fit_one(X, y, Xv, yv, self.chosen_params)[0]

    def _fit_one(self, X, y, Xv, yv, params: dict[str, Any]) -> tuple[Any, float]:
        """One booster and its validation loss (squared error, or log loss for classification)."""
        classify = self.task == "classification"
        threads = {} if self.num_threads is None else {"n_jobs": self.num_threads}
        rate = params.get("learning_rate", self.learning_rate)
        rest = {k: v for k, v in params.items() if k != "learning_rate"}
        if self.booster == "lightgbm":
            import lightgbm as lgb

            cls = lgb.LGBMClassifier if classify else lgb.LGBMRegressor
            leaf = {} if any(k in _lightgbm_aliases("min_data_in_leaf") for k in rest) else {"min_child_samples": 5}
            est = cls(n_estimators=self.n_estimators, learning_rate=rate, random_state=self.seed, verbose=-1,
                      **leaf, **threads, **rest)
            est.fit(X, y, eval_X=Xv, eval_y=yv, callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            model, raw = est.booster_, np.asarray(est.booster_.predict(Xv))
        elif self.booster == "xgboost":
            try:
                import xgboost as xgb
            except ImportError:
                raise ImportError("booster='xgboost' needs the xgboost package (pip install xgboost); "
                                  "booster='lightgbm' is installed.") from None
            cls = xgb.XGBClassifier if classify else xgb.XGBRegressor
            est = cls(n_estimators=self.n_estimators, learning_rate=rate, random_state=self.seed,
                      tree_method="hist", enable_categorical=True, early_stopping_rounds=self.early_stopping_rounds,
                      **threads, **rest)
            est.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
            model = est.get_booster()
            raw = np.asarray(model.predict(xgb.DMatrix(Xv, enable_categorical=True)))
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
            from threadpoolctl import threadpool_limits

            cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
            est = cls(max_iter=self.n_estimators, learning_rate=rate, random_state=self.seed,
                      categorical_features="from_dtype", early_stopping=True,
                      validation_fraction=self.validation_fraction, n_iter_no_change=self.early_stopping_rounds, **rest)
            with threadpool_limits(self.num_threads):  # Xv stays out of the fit it scores (hist splits its own)
                model = est.fit(X, y)
                raw = model.predict_proba(Xv) if classify else model.predict(Xv)
        return model, _validation_loss(classify, yv, raw)

    def _raw(self, frame: Any, where: str, features: dict[str, np.ndarray] | None = None) -> np.ndarray:
        if self._model is None:
            raise ValueError("TabularModel: fit (or load) it first.")
        self._check(frame, where)
        X = self._matrix(frame.reset_index(drop=True), fit=False, features=features, where=where)
        if self.booster == "lightgbm":
            return np.asarray(self._model.predict(X))
        if self.booster == "xgboost":
            import xgboost as xgb

            return np.asarray(self._model.predict(xgb.DMatrix(X, enable_categorical=True)))
        if self.task == "classification":
            return self._model.predict_proba(X)
        return self._model.predict(X)

    def predict_proba(self, frame: Any, where: str = "table", features: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Class probabilities, columns in ``self.classes`` order. Shape: ``(rows, classes)``."""
        if self.task != "classification":
            raise ValueError("predict_proba is for classification; this model does regression.")
        p = self._raw(frame, where, features)
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def predict(self, frame: Any, where: str = "table", features: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Predicted values (regression, in the target's units) or class labels."""
        if self.task == "classification":
            return np.asarray(self.classes, dtype=object)[self.predict_proba(frame, where, features).argmax(1)]
        return self._raw(frame, where, features)

    # --- persistence ----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model into ``folder`` (booster native, PCA as safetensors, the rest JSON); no pickle."""
        import torch
        from safetensors.torch import save_file

        from mtransfer.atomic import atomic_directory

        if self._model is None:
            raise ValueError("TabularModel: fit it before saving.")
        if self.booster == "hist":
            raise ValueError("booster='hist' (scikit-learn) has no native file format, and mtransfer does not pickle: "
                             "use booster='lightgbm' or 'xgboost' to save.")
        folder = Path(folder)
        with atomic_directory(folder) as tmp:
            name = "booster.txt" if self.booster == "lightgbm" else "booster.json"
            self._model.save_model(str(tmp / name))
            tensors = {f"{col}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for col, p in self.projections.items()
                       for k, v in p.items()}
            if tensors:
                save_file(tensors, str(tmp / "projections.safetensors"))
            spec = {"format": FORMAT, "task": self.task, "booster": self.booster, "booster_file": name, "dim": self.dim,
                    "media": self.media, "backbones": self.backbones, "numeric": self.numeric,
                    "categorical": self.categorical, "categories": self.categories, "classes": self.classes,
                    "columns": self.columns_, "projected": sorted(self.projections), "seed": self.seed,
                    "booster_params": self.chosen_params,
                    "target": self.target}
            (tmp / "tabular.json").write_text(json.dumps(spec, indent=1, default=str))
        return folder

    save_pretrained = save  # the name every other mtransfer model uses; ``save`` stays for one version

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, cache_dir: str | None = None, *,
                        trust_remote_code: bool = False) -> TabularModel:
        """A model saved by :meth:`save_pretrained`, ready to predict.

        Opening a folder imports no code: every backbone ``tabular.json`` names must be a registered
        modality with a model name, Hub id or folder (an import path ``package.module:callable`` for
        a ``torch`` backbone only with ``trust_remote_code=True``), and every file it names must lie
        in the folder.

        Raises:
            FileNotFoundError: No ``tabular.json``. ValueError: A damaged or foreign ``tabular.json``,
                a backbone that would import code, a file outside the folder.
        """
        from mtransfer.atomic import read_json
        from mtransfer.weight_files import load_safetensors

        folder = Path(folder).expanduser()
        path = folder / "tabular.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no tabular.json (not a folder TabularModel.save_pretrained wrote).")
        spec = read_json(path, "tabular model spec")
        _check_spec(spec, path, trust_remote_code)
        media = spec["media"]
        model = cls(spec["task"], text_columns=media["text"], image_columns=media["image"], audio_columns=media["audio"],
                    numeric_columns=spec["numeric"], categorical_columns=spec["categorical"],
                    text_model=spec["backbones"]["text"], image_model=spec["backbones"]["image"],
                    audio_model=spec["backbones"]["audio"], dim=spec["dim"], booster=spec["booster"],
                    cache_dir=cache_dir, seed=spec["seed"], target=spec.get("target"))
        model.categories, model.classes, model.columns_ = spec["categories"], spec["classes"], spec["columns"]
        model.chosen_params = dict(spec.get("booster_params") or {})
        if spec["projected"]:
            tensors = {k: v for k, v in load_safetensors(_inside(folder, "projections.safetensors", path)).items()}
            model.projections = {col: {k: tensors[f"{col}.{k}"].numpy() for k in ("mean", "components")}
                                 for col in spec["projected"]}
        booster_file = _inside(folder, spec["booster_file"], path)
        try:
            if spec["booster"] == "lightgbm":
                import lightgbm as lgb

                model._model = lgb.Booster(model_file=str(booster_file))
            else:
                import xgboost as xgb

                model._model = xgb.Booster()
                model._model.load_model(str(booster_file))
        except Exception as err:  # noqa: BLE001  (the boosters raise their own error types)
            raise ValueError(f"{booster_file}: cannot read the {spec['booster']} booster "
                             f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); it may be damaged.") from None
        return model

    load = from_pretrained  # the old name, kept for one version


def _inside(folder: Path, name: Any, spec_path: Path) -> Path:
    """``folder / name`` when that stays inside ``folder``; else an error naming the spec."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{spec_path}: a file name must be a non-empty string, got {name!r}.")
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise ValueError(f"{spec_path}: names the file {name!r}, which lies outside the model folder; a tabular model "
                         "reads only its own files.")
    return path


def _check_spec(spec: Any, path: Path, trust_remote_code: bool) -> None:
    """``tabular.json`` as :meth:`TabularModel.save_pretrained` writes it, naming nothing that would run code."""
    from mtransfer.adapters.base import list_modalities

    if not isinstance(spec, dict) or "format" not in spec:
        raise ValueError(f"{path}: not a tabular model spec (no 'format' key).")
    if not isinstance(spec["format"], int) or spec["format"] > FORMAT:
        raise ValueError(f"{path}: format {spec['format']!r} was written by a newer mtransfer; this version "
                         f"reads format {FORMAT}. Upgrade mtransfer.")
    missing = [k for k in ("task", "booster", "booster_file", "dim", "media", "backbones", "numeric", "categorical",
                           "categories", "classes", "columns", "projected", "seed") if k not in spec]
    if missing:
        raise ValueError(f"{path}: incomplete tabular model spec (missing {', '.join(missing)}).")
    if spec["booster"] not in ("lightgbm", "xgboost"):
        raise ValueError(f"{path}: booster {spec['booster']!r}; a saved model holds 'lightgbm' or 'xgboost'.")
    backbones = spec["backbones"]
    if not isinstance(backbones, dict) or set(backbones) != {"text", "image", "audio"}:
        raise ValueError(f"{path}: 'backbones' must map text, image and audio to [modality, model] or null.")
    for kind, pair in backbones.items():
        if pair is None:
            continue
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError(f"{path}: backbones.{kind} must be [modality, model], got {pair!r}.")
        modality, name = pair
        if modality not in list_modalities():
            raise ValueError(f"{path}: backbones.{kind} names the modality {modality!r}; expected one of "
                             f"{', '.join(list_modalities())}.")
        if ":" in name and not name.startswith("builtin:") and not Path(name).expanduser().exists() \
                and not trust_remote_code:
            raise ValueError(f"{path}: backbones.{kind} names {name!r}, an import path: opening the model would import "
                             "and call that code. Load it with trust_remote_code=True (--trust-remote-code) only if you "
                             "trust the folder.")


SEARCH_FOLDS = 3
# the booster's main settings a search tries (when no booster_params are given); small on purpose: each is one fit
SEARCH_GRIDS: dict[str, list[dict[str, Any]]] = {
    # the fixed defaults (31 leaves, 5 rows per leaf, rate 0.05) are one of the settings: a search can keep them
    "lightgbm": [{"num_leaves": leaves, "min_child_samples": leaf, "learning_rate": rate}
                 for leaves, leaf in ((7, 5), (15, 20), (31, 5), (31, 20), (63, 40)) for rate in (0.05, 0.1)],
    "xgboost": [{"max_depth": depth, "min_child_weight": weight, "learning_rate": rate}
                for depth, weight in ((3, 1), (6, 1), (6, 5), (8, 10)) for rate in (0.05, 0.1)],
    "hist": [{"max_leaf_nodes": leaves, "min_samples_leaf": leaf, "learning_rate": rate}
             for leaves, leaf in ((7, 5), (15, 20), (31, 20), (63, 40)) for rate in (0.05, 0.1)],
}


def _lightgbm_aliases(name: str) -> set[str]:
    from lightgbm.basic import _ConfigAliases

    return set(_ConfigAliases.get(name)) | {name}


def booster_param_names(booster: str) -> set[str]:
    """Every setting name the booster takes (LightGBM: its parameters and their aliases, and its scikit-learn
    wrapper's; XGBoost and ``hist``: their scikit-learn estimators')."""
    if booster == "lightgbm":
        import lightgbm as lgb
        from lightgbm.basic import _ConfigAliases

        names = set(lgb.LGBMRegressor().get_params())
        for canonical, aliases in _ConfigAliases._get_all_param_aliases().items():
            names |= {canonical, *aliases}
        return names
    if booster == "xgboost":
        import xgboost as xgb

        return set(xgb.XGBRegressor().get_params()) | set(xgb.XGBClassifier().get_params())
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return set(HistGradientBoostingRegressor().get_params()) | set(HistGradientBoostingClassifier().get_params())


# settings TabularModel sets itself (its own arguments), refused as booster_params so each is given in one place
_OWN_SETTINGS = {"n_estimators", "max_iter", "num_iterations", "num_boost_round", "random_state", "seed",
                 "early_stopping_rounds", "early_stopping", "n_iter_no_change", "validation_fraction", "n_jobs",
                 "num_threads", "nthread", "verbose", "verbosity", "categorical_features", "enable_categorical",
                 "tree_method", "objective", "loss"}


def check_booster_params(booster: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` if the booster knows every name; else a ValueError naming the unknown one and close names."""
    import difflib

    if booster not in BOOSTERS or not params:
        return dict(params)
    known = booster_param_names(booster)
    for name in params:
        if name in _OWN_SETTINGS:
            raise ValueError(f"booster setting {name!r} is set by mtransfer itself (n_estimators, early stopping, "
                             "threads: use TabularModel's own arguments, or --num-threads).")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            raise ValueError(f"booster setting {name!r}: {booster} has no such parameter"
                             + (f"; did you mean {', '.join(close)}?" if close else "."))
    return dict(params)


def _validation_loss(classify: bool, y: np.ndarray, raw: np.ndarray) -> float:
    """Squared error (regression) or log loss (classification: binary probabilities or a class matrix)."""
    if not classify:
        return float(np.mean((np.asarray(raw, dtype=np.float64) - y) ** 2))
    p = np.asarray(raw, dtype=np.float64)
    p = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), np.asarray(y, dtype=int)], 1e-12, 1.0))))


def _model_pair(value: str | None, flag: str) -> tuple[str, str] | None:
    if value is None:
        return None
    modality, sep, model = value.partition(":")
    if not sep or not model:
        raise ValueError(f"{flag} {value!r}: expected MODALITY:MODEL, e.g. sentence:builtin:minilm.")
    return modality, model


def tabular_settings(a: Any) -> tuple[str, str, dict[str, list[str]], dict[str, Any]]:
    """``(target, task, column roles, TabularModel settings)`` from the flags and a builtin table's defaults.

    Shared by ``mtransfer tabular`` and ``recipes/tabular.py`` (the same flags under ``accelerate launch``).
    """
    table = TABLES.get(a.train)
    columns = dict(text_columns=a.text_column, image_columns=a.image_column, audio_columns=a.audio_column,
                   numeric_columns=a.numeric_column, categorical_columns=a.categorical_column)
    models = {"text_model": a.text_model, "image_model": a.image_model, "audio_model": a.audio_model}
    if table is not None:
        if not any(columns.values()):
            columns.update(table.columns)
        models.update({k: v for k, v in table.models.items() if models[k] is None})
    target = a.target or (table.target if table else None)
    if target is None:
        raise ValueError("--target: which column to predict? (required for a table file)")
    task = a.task or (table.task if table and target == table.target else "regression")
    settings = {k: _model_pair(v, "--" + k.replace("_", "-")) for k, v in models.items()}
    settings.update(dim=a.dim, booster=a.booster, progress=not a.no_progress,
                    booster_params=parse_booster_params(getattr(a, "booster_params", []), a.booster),
                    search=not getattr(a, "no_search", False), num_threads=getattr(a, "num_threads", None))
    return target, task, columns, settings


def parse_booster_params(pairs: Sequence[str], booster: str) -> dict[str, Any]:
    """``--booster-param KEY=VALUE`` flags as a dict (values read as YAML), checked against the booster's names."""
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--booster-param {pair!r}: expected KEY=VALUE, e.g. num_leaves=15.")
        params[key.strip()] = yaml.safe_load(value)
    try:
        return check_booster_params(booster, params)
    except ValueError as err:
        raise ValueError(f"--booster-param: {err}") from None


def check_target_not_a_feature(target: str, columns: dict[str, Sequence[str]]) -> None:
    """Refuse the target column, or a column named after it (``price_log`` for ``price``), among the features."""
    import re

    words = lambda name: [w for w in re.split(r"[^0-9a-z]+", str(name).lower()) if w]  # noqa: E731
    own = words(target)
    for role, cols in columns.items():
        for col in cols:
            theirs = words(col)
            derived = bool(own) and any(theirs[i:i + len(own)] == own for i in range(len(theirs) - len(own) + 1))
            if col == target or derived:
                what = "is the target" if col == target else f"is named after the target {target!r}"
                raise ValueError(f"column {col!r} ({role.replace('_columns', '')}) {what}: a model that reads its own "
                                 "target learns nothing it can use. Leave it out of the feature columns"
                                 + ("" if col == target else ", or rename it if it is not derived from the target") + ".")


def score_predictions(task: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

    if task == "regression":
        return {"rmse": float(np.sqrt(mean_squared_error(truth, pred))), "mae": float(mean_absolute_error(truth, pred)),
                "r2": float(r2_score(truth, pred))}
    return {"accuracy": float(accuracy_score(truth, pred)), "f1": float(f1_score(truth, pred, average="macro"))}


def read_table(source: str, limit: int | None = None, seed: int = 0, what: str = "table") -> Any:
    """A csv / tsv / json / jsonl / parquet file, or a ``builtin:`` table, as a DataFrame.

    ``limit`` rows are sampled with ``seed`` (a builtin table has its own default size).
    """
    import pandas as pd

    if source.startswith(PREFIX):
        if source not in TABLES:
            raise ValueError(f"{what} {source}: unknown builtin table; expected one of {', '.join(TABLES)}.")
        table = TABLES[source]
        return table.read(limit or table.default_limit, seed)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {source}: no such file.")
    readers = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".json": pd.read_json,
               ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
    if path.suffix.lower() not in readers:
        raise ValueError(f"{what} {source}: expected a {', '.join(readers)} table.")
    frame = readers[path.suffix.lower()](path)
    # image / audio paths in the table are relative to the table's own folder, as in load_labeled
    columns = resolve_relative_paths({c: frame[c].tolist() for c in frame.columns},
                                     path.resolve().parent)
    for c, values in columns.items():
        if values != frame[c].tolist():
            frame[c] = values
    if limit is not None and limit < len(frame):
        frame = frame.sample(n=limit, random_state=seed)
    return frame.reset_index(drop=True)
