"""`python -m patchcore_edge`: the same as the `patchcore-edge` console script."""
import sys

from patchcore_edge.main import main

sys.exit(main())
