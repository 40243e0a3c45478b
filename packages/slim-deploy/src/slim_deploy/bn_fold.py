"""BN folding for deployment: the implementation lives in :mod:`slim_core.bn_fold` (shared with slim-quant).

Example:
    >>> from slim_deploy.bn_fold import fold_bn
    >>> folded = fold_bn(model, input_spec=[None, 3, 32, 32])   # doctest: +SKIP
"""

from slim_core.bn_fold import LinearBNPair, bn_scale_shift, find_linear_bn_pairs, fold_bn, fold_bn_

__all__ = ["fold_bn", "fold_bn_", "bn_scale_shift", "LinearBNPair", "find_linear_bn_pairs"]
