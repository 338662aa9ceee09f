"""Linear fits on the shipped corpus (docs/SPEC.md §15): ``collect`` (residual rows of a model over the
corpus's fit and held-out parts), ``maps`` (the shallow → deep linear maps between two models, P2 §10) and
``lens`` (the linear shortcut lens: per layer, an affine map from h_l to the model's final residual).
Both fit closed-form ridge maps (``effdepth.ridge``)."""

from effdepth.linear.collect import Rows, residual_rows, token_windows
from effdepth.linear.maps import (
                                   LinearMap,
                                   check_pair,
                                   check_same_tokenizer,
                                   fit_errors,
                                   linear_map,
                                   map_key,
                                   peak_bytes,
)

__all__ = [
    "LinearMap", "Rows", "check_pair", "check_same_tokenizer", "fit_errors", "linear_map",
    "map_key", "peak_bytes", "residual_rows", "token_windows",
]
