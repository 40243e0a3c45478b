"""Input specifications: moved to :mod:`slim_core.spec` (one normalisation for every package); kept as an alias.

Example:
    >>> from slim_deploy.spec import normalize_input_spec   # same function as slim_core.spec's
"""

from slim_core.spec import InputSpecLike, check_spec_matches_forward, example_inputs, normalize_input_spec, spec_to_dicts

__all__ = ["InputSpecLike", "normalize_input_spec", "example_inputs", "check_spec_matches_forward", "spec_to_dicts"]
