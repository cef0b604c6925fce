"""The logged model's code (MLflow "models from code"): read by MLflow, never imported by lrexp.

MLflow copies this file into each logged model and runs it at load time, so a served model needs
only mlflow, numpy and pandas, neither lrexp nor JAX, and nothing is unpickled. The one-hot
encoding of text columns is therefore a copy of ``lrexp.core.tables.encode_onehot``'s.
"""

import json

import mlflow
import numpy as np
import pandas as pd


class LinearModel(mlflow.pyfunc.PythonModel):
    """ŷ = bias + X·weights over named feature columns, in the data's original units.

    A feature ``"column=category"`` of a one-hot group is 1 where the raw text column holds that
    category, else 0; the group's first category (the baseline) has no feature.
    """

    def load_context(self, context):
        with open(context.artifacts["theta"], encoding="utf-8") as fh:
            cfg = json.load(fh)
        self.features = list(cfg["features"])
        self.categories = {c: list(v) for c, v in cfg.get("categories", {}).items()}
        self.bias = float(cfg["bias"])
        self.weights = np.asarray(cfg["weights"], dtype=np.float64)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self.bias + encode(model_input, self.features, self.categories) @ self.weights


def encode(frame: pd.DataFrame, features: list, categories: dict) -> np.ndarray:
    """The rows' features: numbers as given, a 0/1 column per category but each group's first."""
    indicator = {f"{c}={v}": (c, v) for c, cats in categories.items() for v in cats[1:]}
    texts, out = {}, []
    for name in features:
        column, value = indicator.get(name, (name, None))
        if value is None:
            out.append(np.asarray(frame[column], dtype=np.float64))
            continue
        if column not in texts:
            texts[column] = np.array([str(v).strip() for v in frame[column]], dtype=object)
            unknown = sorted(set(texts[column]) - set(categories[column]))
            if unknown:  # the baseline has no column: an unknown value would pass as it
                known = ", ".join(map(repr, categories[column]))
                raise ValueError(f"{unknown[0]!r} is no category of column {column!r}: [{known}]")
        out.append(texts[column] == value)
    return np.column_stack(out).astype(np.float64) if out else np.empty((len(frame), 0))


mlflow.models.set_model(LinearModel())
