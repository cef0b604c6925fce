"""The logged model's code (MLflow "models from code"): read by MLflow, never imported by lrexp.

MLflow copies this file into each logged model and runs it at load time, so a served model needs
only mlflow, numpy and pandas, neither lrexp nor JAX, and nothing is unpickled.
"""

import json

import mlflow
import numpy as np
import pandas as pd


class LinearModel(mlflow.pyfunc.PythonModel):
    """ŷ = bias + X·weights over named feature columns, in the data's original units."""

    def load_context(self, context):
        with open(context.artifacts["theta"], encoding="utf-8") as fh:
            cfg = json.load(fh)
        self.features = list(cfg["features"])
        self.bias = float(cfg["bias"])
        self.weights = np.asarray(cfg["weights"], dtype=np.float64)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        X = np.asarray(model_input[self.features], dtype=np.float64)
        return self.bias + X @ self.weights


mlflow.models.set_model(LinearModel())
