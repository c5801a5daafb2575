"""``dqkit.charts``: the investigation charts (:mod:`dqkit.investigate.charts`) under the short
name the notebooks and the README use. This module *is* that module, not a copy."""

import sys

from dqkit.investigate import charts as _charts

sys.modules[__name__] = _charts
